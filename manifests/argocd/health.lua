-- Argo CD health of a tenantry.io Tenant, Subscription, Plan, ApiKey, Coupon or TaxRate,
-- from its Ready condition (README, "GitOps"). argocd-cm.yaml holds this same text under
-- each kind's key; obj.kind picks the few rules that belong to one kind.
local hs = {status = "Progressing", message = "Waiting for the operator to report."}
if obj.kind == "Tenant" and obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  hs.message = "Paused (spec.paused): the operator leaves it as it is."
  return hs
end
local status = obj.status
if status == nil or status.conditions == nil then
  return hs
end
local ready = nil
for _, condition in ipairs(status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  end
end
if ready == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and ((status.observedGeneration or generation) < generation
    or (ready.observedGeneration or generation) < generation) then
  hs.message = "Waiting for the operator to reconcile generation " .. generation .. "."
  return hs
end
hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
if ready.status == "False" then
  hs.status = "Degraded"
  if obj.kind == "ApiKey" and ready.reason == "Revoked" and obj.spec.revoked == true then
    -- Revoked as its spec asks: not a fault, and revocation is for good.
    hs.status = "Suspended"
  end
elseif ready.status == "True" then
  hs.status = "Healthy"
  if obj.kind == "Tenant" and ready.reason == "Suspended" then
    -- spec.suspended, or a Subscription unpaid or canceled: scaled to zero, data kept.
    hs.status = "Suspended"
  elseif obj.kind == "Subscription"
      and (status.state == "unpaid" or status.state == "canceled") then
    -- Its instance is scaled to zero until payment (unpaid) or for good (canceled).
    hs.status = "Suspended"
  elseif obj.kind == "Plan" and status.rollout ~= nil
      and status.rollout.phase ~= nil and status.rollout.phase ~= "Complete" then
    -- A rollout of its chart version: under way, paused, or stopped by a failed gate.
    local phases = {Progressing = "Progressing", Waiting = "Progressing",
                    Paused = "Suspended", Failed = "Degraded"}
    hs.status = phases[status.rollout.phase] or "Progressing"
    hs.message = "Rollout " .. status.rollout.phase .. ": " .. (status.rollout.message or "")
  end
end
return hs
