-- Runs the chart's Argo CD health check (as Argo CD does: a chunk reading the global `obj`)
-- against DBU statuses shaped like the operator's, under lua5.1 (Argo CD's Lua dialect).
local script = arg[1] or "charts/dovecot-upgrade-operator/argocd/health.lua"
local chunk = assert(loadfile(script))

local function cond(type_, status, reason, message)
  return { type = type_, status = status, reason = reason, message = message }
end
local function dbu(generation, status, spec)
  return { apiVersion = "mailops.io/v1alpha1", kind = "DovecotBackendUpgrade",
           metadata = { name = "r", namespace = "mail", generation = generation },
           spec = spec or {}, status = status }
end

local progressing = { observedGeneration = 2, phase = "Progressing", progress = "1/3",
  conditions = { cond("Ready", "False", "Progressing", "1/3 backends upgraded"),
                 cond("Reconciling", "True", "StepInProgress", "backend-1: WaitSessions"),
                 cond("Stalled", "False", "Progressing", "") } }
local stalled = { observedGeneration = 2, phase = "Failed", progress = "1/3",
  conditions = { cond("Ready", "False", "BackendFailed", "x"),
                 cond("Reconciling", "False", "BackendFailed", "x"),
                 cond("Stalled", "True", "BackendFailed",
                      "backend backend-1 (10.0.0.5) failed at step Verify: command \"doveadm mailbox list\" exited 67") } }
local done = { observedGeneration = 2, phase = "Completed", progress = "3/3",
  conditions = { cond("Ready", "True", "UpgradeComplete", "all backends (3/3) run revision backend-7d9"),
                 cond("Reconciling", "False", "UpgradeComplete", ""),
                 cond("Stalled", "False", "UpgradeComplete", "") } }
local paused = { observedGeneration = 3, phase = "Paused", progress = "1/3",
  conditions = { cond("Ready", "False", "Paused", "p"), cond("Reconciling", "False", "Paused", "p"),
                 cond("Stalled", "False", "Paused", "") } }

local canary = { observedGeneration = 4, phase = "Paused", progress = "1/3",
  conditions = { cond("Ready", "False", "AwaitingApproval", "canary upgraded to revision backend-7d9; check it, then approve"),
                 cond("Reconciling", "False", "AwaitingApproval", "x"),
                 cond("Stalled", "False", "AwaitingApproval", "") } }
local planned = { observedGeneration = 4, phase = "Planned", progress = "0/3",
  conditions = { cond("Ready", "False", "DryRun", "dry run: 3 backends would be upgraded; see status.plan"),
                 cond("Reconciling", "False", "DryRun", "x"), cond("Stalled", "False", "DryRun", "") } }
local aborted = { observedGeneration = 4, phase = "Aborted", progress = "1/3",
  conditions = { cond("Ready", "False", "Aborted", "rollout aborted (spec.abort); no backend is drained"),
                 cond("Reconciling", "False", "Aborted", "x"),
                 cond("Stalled", "True", "Aborted", "rollout aborted (spec.abort); no backend is drained") } }

local cases = {
  { "canary awaiting approval", dbu(4, canary), "Suspended", "approve" },
  { "dry run", dbu(4, planned), "Suspended", "would be upgraded" },
  { "aborted", dbu(4, aborted), "Degraded", "spec.abort" },
  { "no status yet", dbu(1, nil), "Progressing", "Waiting for the operator" },
  { "in progress", dbu(2, progressing), "Progressing", "backend-1: WaitSessions" },
  { "stalled: a human is needed", dbu(2, stalled), "Degraded", "failed at step Verify" },
  { "complete", dbu(2, done), "Healthy", "3/3" },
  { "complete, but for an older generation", dbu(3, done), "Progressing", "generation 3" },
  { "paused", dbu(3, paused, { paused = true }), "Suspended", "1/3" },
  { "stalled wins over paused", dbu(2, stalled, { paused = true }), "Degraded", "Verify" },
}

local passed, failed = 0, 0
for _, c in ipairs(cases) do
  obj = c[2]
  local hs = chunk()
  if hs.status == c[3] and string.find(hs.message, c[4], 1, true) then
    passed = passed + 1
    print("ok - " .. c[1] .. ": " .. hs.status)
  else
    failed = failed + 1
    print("not ok - " .. c[1] .. ": got " .. tostring(hs.status) .. " / " .. tostring(hs.message))
  end
end
print(passed .. " passed, " .. failed .. " failed")
os.exit(failed == 0 and 0 or 1)
