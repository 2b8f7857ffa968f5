// A node-soap client of the Notify operation, made from a WSDL file.
//
// usage: node node_notify.js WSDL_FILE ENDPOINT SIGNATURE TIMESTAMP VERSION EVENT_TYPE HIT_TYPE_ID HIT_ID ASSIGNMENT_ID
//
// Prints one JSON line: the result and the request node-soap sent.
"use strict";
const soap = require("soap");

async function main() {
  const [wsdl, endpoint, signature, timestamp, version, eventType, hitTypeId, hitId, assignmentId] =
    process.argv.slice(2);
  const client = await soap.createClientAsync(wsdl);
  client.setEndpoint(endpoint);
  // Strings, not Date objects: the Timestamp text must be exactly what was signed.
  const [result] = await client.NotifyAsync({
    Signature: signature,
    Timestamp: timestamp,
    Version: version,
    Event: [
      {
        EventType: eventType,
        EventTime: timestamp,
        HITTypeId: hitTypeId,
        HITId: hitId,
        AssignmentId: assignmentId,
      },
    ],
  });
  process.stdout.write(JSON.stringify({ result: result, request: client.lastRequest }) + "\n");
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + "\n");
  if (error && error.body) process.stderr.write(String(error.body) + "\n");
  process.exit(1);
});
