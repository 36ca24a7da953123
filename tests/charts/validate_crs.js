// Validates custom resources (Argo CD, cert-manager, Istio, prometheus-operator) against the JSON
// schemas shipped in the kubernetes-models npm packages. Reads a JSON array of objects on stdin,
// prints a JSON array of {kind, name, error} (error null when valid). Exits 2 on a kind it has no
// model for, so that a new kind cannot slip through unvalidated.
"use strict";

const PACKAGES = {
  "argoproj.io": "@kubernetes-models/argo-cd",
  "cert-manager.io": "@kubernetes-models/cert-manager",
  "networking.istio.io": "@kubernetes-models/istio",
  "security.istio.io": "@kubernetes-models/istio",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};
// @kubernetes-models/istio 2.x (the last major for node 20) predates networking.istio.io/v1; v1 was
// promoted from v1beta1 with the same schema, so v1 objects are checked against the v1beta1 model.
const FALLBACK_VERSIONS = { "networking.istio.io/v1": "v1beta1", "security.istio.io/v1": "v1beta1" };

// Returns [Model, apiVersion the model expects] or null.
function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.split("/");
  const pkg = PACKAGES[group];
  if (!pkg) return null;
  for (const v of [version, FALLBACK_VERSIONS[apiVersion]].filter(Boolean)) {
    try {
      const mod = require(`${pkg}/${group}/${v}/${kind}`);
      if (mod[kind]) return [mod[kind], `${group}/${v}`];
    } catch (e) {
      if (e.code !== "MODULE_NOT_FOUND" && e.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED") throw e;
    }
  }
  return null;
}

const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const results = [];
let missing = false;
for (const obj of input) {
  const found = modelFor(obj.apiVersion, obj.kind);
  const name = (obj.metadata || {}).name;
  if (!found) {
    results.push({ kind: obj.kind, apiVersion: obj.apiVersion, name, error: "no model for this kind" });
    missing = true;
    continue;
  }
  try {
    const [Model, modelApiVersion] = found;
    new Model({ ...obj, apiVersion: modelApiVersion }).validate();
    results.push({ kind: obj.kind, apiVersion: obj.apiVersion, name, error: null });
  } catch (e) {
    results.push({ kind: obj.kind, apiVersion: obj.apiVersion, name, error: String(e.message || e) });
  }
}
process.stdout.write(JSON.stringify(results));
process.exit(missing ? 2 : 0);
