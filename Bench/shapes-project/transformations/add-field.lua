-- add-field: adds one member to the event (enrichment's most common write).
function transformEvent(event)
  event.source = "web"
  return event
end
