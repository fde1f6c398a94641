-- Argo CD health of a DovecotRing, from its kstatus conditions (gopher-lua, base and table
-- libraries only). Progressing: no status yet, a status of an older generation, or no Ready
-- director. Degraded: Stalled=True (the directors disagree, or the ring is declared twice).
-- Healthy: Ready=True (every director agrees and is synced).
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
  hs.message = cond.Ready.message or "The directors agree"
  return hs
end
if cond.Ready ~= nil and cond.Ready.message ~= nil and cond.Ready.message ~= "" then
  hs.message = cond.Ready.message
end
return hs
