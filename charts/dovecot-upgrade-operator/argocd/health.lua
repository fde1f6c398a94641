-- Argo CD health of a DovecotBackendUpgrade, from its kstatus conditions.
-- Degraded: Stalled=True (a human is needed, or spec.abort). Suspended: spec.paused, phase Paused
-- (canary approval, maintenance window, hold) or Planned (spec.dryRun). Healthy: Ready=True.
-- Progressing: everything else, including a status that describes an older generation.
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil then
  return hs
end
local st = obj.status
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and st.observedGeneration ~= generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local cond = {}
for _, c in ipairs(st.conditions or {}) do
  cond[c.type] = c
end
if cond.Stalled ~= nil and cond.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = cond.Stalled.message or cond.Stalled.reason or "Stalled"
  return hs
end
if (obj.spec ~= nil and obj.spec.paused == true) or st.phase == "Paused" or st.phase == "Planned" then
  -- paused, awaiting canary approval, outside the maintenance window, held, or a dry run
  hs.status = "Suspended"
  local why = cond.Ready ~= nil and cond.Ready.message or ""
  if why == "" then
    why = "Paused"
  end
  hs.message = why .. " (" .. (st.progress or "?") .. " backends upgraded)"
  return hs
end
if cond.Ready ~= nil and cond.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = cond.Ready.message or "Upgrade complete"
  return hs
end
if cond.Reconciling ~= nil and cond.Reconciling.message ~= nil and cond.Reconciling.message ~= "" then
  hs.message = cond.Reconciling.message
else
  hs.message = "Upgrading: " .. (st.progress or "?") .. " backends upgraded"
end
return hs
