-- A new mailops.io/retry value reruns failed backends once. The object's resourceVersion is
-- new after every write (the operator records the token it acted on), so each retry differs.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local token = obj.metadata.resourceVersion
if token == nil then
  token = "generation-" .. tostring(obj.metadata.generation)
end
obj.metadata.annotations["mailops.io/retry"] = "argocd-" .. token
return obj
