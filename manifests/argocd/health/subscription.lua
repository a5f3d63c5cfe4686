-- Argo CD health of a tenantry.io Subscription, from its Ready condition (README, "GitOps").
local hs = {status = "Progressing", message = "Waiting for the operator to report."}
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
local said = (ready.reason or "") .. ": " .. (ready.message or "")
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = said
elseif ready.status == "True" and (status.state == "unpaid" or status.state == "canceled") then
  -- Its instance is scaled to zero until payment (unpaid) or for good (canceled).
  hs.status = "Suspended"
  hs.message = said
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = said
else
  hs.message = said
end
return hs
