-- Health of an Argo CD Application seen as a resource of another Application (the root of this
-- bundle). Argo CD has had no built-in check for it since 1.8, so without this every child counts
-- as Healthy the moment it exists and sync waves order nothing (docs/operator-manual/health.md).
--
-- Stricter than the check in Argo CD's docs: a child is Healthy only when it is Healthy AND
-- Synced. Argo CD leaves resources that failed to apply out of an Application's health, so a
-- child whose sync keeps failing (a CRD it needs is not there yet) can read Healthy while half of
-- it is missing; the next wave must not start on that.
hs = {}
hs.status = "Progressing"
hs.message = "waiting for the Application to be synced and healthy"
if obj.status ~= nil and obj.status.health ~= nil then
  local health = obj.status.health.status
  local sync = nil
  if obj.status.sync ~= nil then
    sync = obj.status.sync.status
  end
  if obj.status.health.message ~= nil then
    hs.message = obj.status.health.message
  end
  if health == "Degraded" then
    hs.status = "Degraded"
  elseif health == "Healthy" and sync == "Synced" then
    hs.status = "Healthy"
  elseif health == "Healthy" then
    hs.message = "healthy, but " .. tostring(sync) .. ": waiting for its sync"
  end
end
return hs
