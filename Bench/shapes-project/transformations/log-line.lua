-- log-line: one log line per event.
function transformEvent(event)
  log("event", event.type, event.messageId)
  return event
end
