-- Argo CD health of an OutboundDelivery (resource.customizations.health.outbound.dev_OutboundDelivery).
hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil then
  return hs
end
local ready = nil
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      ready = c
    end
  end
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to see the latest spec"
  return hs
end
if ready ~= nil then
  hs.message = ready.reason .. ": " .. ready.message
end
local phase = obj.status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" then
  hs.status = "Degraded"
elseif ready ~= nil and ready.reason == "Suspended" then
  hs.status = "Suspended"
end
return hs
