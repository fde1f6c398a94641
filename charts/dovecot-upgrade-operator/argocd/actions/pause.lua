-- spec.paused: no new step starts; a step already running finishes.
obj.spec.paused = true
return obj
