-- Which Argo CD actions a DovecotBackendUpgrade offers now. Each action changes the spec or an
-- annotation (what the operator reads), never the status. Base and table libraries only.
local actions = {}
local spec = obj.spec or {}
local st = obj.status or {}
local cond = {}
for _, c in ipairs(st.conditions or {}) do
  cond[c.type] = c
end
local stalled = cond.Stalled ~= nil and cond.Stalled.status == "True"
local awaiting = cond.Ready ~= nil and cond.Ready.reason == "AwaitingApproval"
actions["pause"] = { ["disabled"] = spec.paused == true }
actions["resume"] = { ["disabled"] = spec.paused ~= true and spec.abort ~= true }
actions["abort"] = { ["disabled"] = spec.abort == true }
actions["approve-canary"] = { ["disabled"] = not awaiting }
actions["retry"] = { ["disabled"] = not stalled }
actions["skip-backend"] = { ["disabled"] = false, ["params"] = { { ["name"] = "backend" } } }
return actions
