-- Clears spec.paused and spec.abort: the rollout goes on (after an abort, it starts over).
obj.spec.paused = false
obj.spec.abort = false
return obj
