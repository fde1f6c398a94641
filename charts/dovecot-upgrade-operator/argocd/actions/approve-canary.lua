-- Approves the canary's revision: spec.revision when set, else status.targetRevision.
if obj.spec.canary == nil then
  obj.spec.canary = {}
end
local rev = obj.spec.revision
if rev == nil and obj.status ~= nil then
  rev = obj.status.targetRevision
end
obj.spec.canary.approvedRevision = rev
return obj
