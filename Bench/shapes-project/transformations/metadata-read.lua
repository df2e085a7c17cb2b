-- metadata-read: reads one field of metadata(event) and keeps the event.
function transformEvent(event, metadata)
  if metadata(event).sourceId == "blocked-source" then return nil end
  return event
end
