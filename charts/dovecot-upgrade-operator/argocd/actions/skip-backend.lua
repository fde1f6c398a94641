-- Adds a backend to spec.skip: the action parameter `backend`, else the one in flight
-- (status.current). One not yet past StopLmtp goes back into the ring at its revision and the
-- rollout goes on without it; one past it finishes (it can only come back verified).
if obj.spec.skip == nil then
  obj.spec.skip = {}
end
local pod = nil
if actionParams ~= nil and actionParams["backend"] ~= nil and actionParams["backend"] ~= "" then
  pod = actionParams["backend"]
elseif obj.status ~= nil then
  pod = obj.status.current
end
local present = false
for _, p in ipairs(obj.spec.skip) do
  if p == pod then
    present = true
  end
end
if pod ~= nil and not present then
  table.insert(obj.spec.skip, pod)
end
return obj
