-- Argo CD health of a DovecotBackendUpgrade, from its kstatus conditions. Argo CD runs this in
-- gopher-lua with the base, table and package libraries only: no string or math functions.
-- Argo CD itself shows a DBU being deleted as Progressing ("Pending deletion") before this runs.
-- Progressing: no status yet, a status of an older generation, or a rollout under way.
-- Degraded: Stalled=True (a human is needed, or spec.abort). Healthy: Ready=True, also when
-- paused after completing. Suspended: spec.paused, phase Paused (canary approval, maintenance
-- window, hold) or Planned (dryRun).
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil then
  return hs
end
local st = obj.status
local cond = {}
for _, c in ipairs(st.conditions or {}) do
  cond[c.type] = c
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and st.observedGeneration ~= generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
if cond.Stalled ~= nil and cond.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = cond.Stalled.message or cond.Stalled.reason or "Stalled"
  return hs
end
if cond.Ready ~= nil and cond.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = cond.Ready.message or "Upgrade complete"
  if obj.spec ~= nil and obj.spec.paused == true then
    hs.message = hs.message .. " (paused)"
  end
  return hs
end
if (obj.spec ~= nil and obj.spec.paused == true) or st.phase == "Paused" or st.phase == "Planned" then
  hs.status = "Suspended"
  local why = cond.Ready ~= nil and cond.Ready.message or ""
  if why == "" then
    why = "Paused"
  end
  hs.message = why .. " (" .. (st.progress or "?") .. " backends upgraded)"
  return hs
end
if cond.Reconciling ~= nil and cond.Reconciling.message ~= nil and cond.Reconciling.message ~= "" then
  hs.message = cond.Reconciling.message
else
  hs.message = "Upgrading: " .. (st.progress or "?") .. " backends upgraded"
end
return hs
