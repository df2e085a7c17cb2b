-- metadata-copy: copies a metadata field into the event.
function transformEvent(event, metadata)
  event.source_id = metadata(event).sourceId
  return event
end
