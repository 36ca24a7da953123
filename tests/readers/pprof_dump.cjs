// Decodes a gzip'd pprof file with Datadog's pure-JS `pprof-format` (an implementation we did not
// write) and prints a JSON summary the Rust tests assert on.
// Usage: NODE_PATH=target/test-tools/node_modules node pprof_dump.cjs FILE
'use strict';
const fs = require('fs');
const zlib = require('zlib');
const { Profile } = require('pprof-format');

const raw = zlib.gunzipSync(fs.readFileSync(process.argv[2]));
const p = Profile.decode(raw);
const str = (i) => p.stringTable.strings[Number(i)];
const byId = (list) => new Map(list.map((x) => [Number(x.id), x]));
const functions = byId(p.function);
const locations = byId(p.location);
const mappings = byId(p.mapping);

const out = {
  string0: str(0),
  sampleTypes: p.sampleType.map((t) => [str(t.type), str(t.unit)]),
  periodType: p.periodType ? [str(p.periodType.type), str(p.periodType.unit)] : null,
  period: Number(p.period),
  timeNanos: String(p.timeNanos),
  durationNanos: Number(p.durationNanos),
  comments: p.comment.map(str),
  mappings: p.mapping.map((m) => ({
    id: Number(m.id),
    file: str(m.filename),
    buildId: str(m.buildId),
    start: String(m.memoryStart),
    limit: String(m.memoryLimit),
    hasLineNumbers: m.hasLineNumbers,
  })),
  // Each sample: values and its frames leaf first, one entry per line (inlined frames included).
  samples: p.sample.map((s) => ({
    values: s.value.map(Number),
    frames: s.locationId.flatMap((id) => {
      const loc = locations.get(Number(id));
      if (!loc) throw new Error(`sample refers to missing location ${id}`);
      if (Number(loc.mappingId) !== 0 && !mappings.has(Number(loc.mappingId))) {
        throw new Error(`location ${id} refers to missing mapping ${loc.mappingId}`);
      }
      return loc.line.map((l) => {
        const f = functions.get(Number(l.functionId));
        if (!f) throw new Error(`line refers to missing function ${l.functionId}`);
        return { name: str(f.name), file: str(f.filename), line: Number(l.line), mapping: Number(loc.mappingId) };
      });
    }),
  })),
};
process.stdout.write(JSON.stringify(out));
