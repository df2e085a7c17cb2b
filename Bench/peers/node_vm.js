#!/usr/bin/env node
// Runs a transformation file's transformEvent in a Node `vm` context over NDJSON events, the way
// ../shared/bench/peer_node_vm.js runs ignore_internal_emails.js: one answer line per event
// ({"output", "statusCode": 200} or {"statusCode": 298}), timed from reading to writing.
// Usage: node node_vm.js SCRIPT.js EVENTS.ndjson [OUT]   -> "peer node-vm SCRIPT: N events in S s = R events/s"
'use strict';
const fs = require('fs'), vm = require('vm'), path = require('path');
const [,, script, inPath, outPath] = process.argv;
const context = vm.createContext({});
vm.runInContext(fs.readFileSync(script, 'utf8'), context);
const transform = vm.runInContext('transformEvent', context);
const start = process.hrtime.bigint();
const answers = [];
let count = 0;
for (const line of fs.readFileSync(inPath, 'utf8').split('\n')) {
  if (!line) continue;
  count++;
  const parsed = JSON.parse(line);
  const result = transform(parsed.message ? parsed.message : parsed, {});
  answers.push(result == null ? '{"statusCode":298}' : JSON.stringify({ output: result, statusCode: 200 }));
}
fs.writeFileSync(outPath || '/dev/null', answers.join('\n') + '\n');
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(`peer node-vm ${path.basename(script, '.js')}: ${count} events in ${seconds.toFixed(3)} s = ${Math.round(count / seconds)} events/s`);
