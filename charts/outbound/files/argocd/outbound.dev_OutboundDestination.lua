-- Argo CD health of an OutboundDestination (resource.customizations.health.outbound.dev_OutboundDestination).
hs = { status = "Progressing", message = "Waiting for the first probe" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the probe of the latest spec"
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    hs.message = c.reason .. ": " .. c.message
    if c.status == "True" then
      hs.status = "Healthy"
    else
      hs.status = "Degraded"
    end
  end
end
return hs
