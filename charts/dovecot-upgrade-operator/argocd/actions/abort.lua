-- spec.abort: stop and leave nothing drained (a backend whose Dovecot was stopped stays out).
obj.spec.abort = true
return obj
