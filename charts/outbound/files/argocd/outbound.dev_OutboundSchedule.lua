-- Argo CD health of an OutboundSchedule (resource.customizations.health.outbound.dev_OutboundSchedule).
hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.spec ~= nil and obj.spec.suspend then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: no new runs"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    hs.message = c.reason .. ": " .. c.message
    if c.status ~= "True" then
      hs.status = "Degraded"
      return hs
    end
    hs.status = "Healthy"
  end
end
-- A schedule whose latest run failed (and none succeeded since) needs a look.
local failed = obj.status.lastFailureTime
local succeeded = obj.status.lastSuccessfulTime
if failed ~= nil and (succeeded == nil or failed > succeeded) then
  hs.status = "Degraded"
  hs.message = "the latest run failed at " .. failed
end
return hs
