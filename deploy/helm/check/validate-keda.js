// Validates KEDA objects (one JSON document per line on stdin) against KEDA's CRD schemas
// from @kubernetes-models/keda; prints each failure and exits 1 if any.
"use strict";
const readline = require("readline");
const keda = require("@kubernetes-models/keda/keda.sh/v1alpha1");

const lines = readline.createInterface({ input: process.stdin });
let failures = 0;
let checked = 0;
lines.on("line", (line) => {
  if (!line.trim()) return;
  const doc = JSON.parse(line);
  const model = keda[doc.kind];
  const where = `${doc.kind}/${doc.metadata && doc.metadata.name}`;
  if (doc.apiVersion !== "keda.sh/v1alpha1" || !model) {
    console.error(`${where}: not a KEDA v1alpha1 kind (${doc.apiVersion})`);
    failures++;
    return;
  }
  try {
    new model(doc).validate();
    checked++;
  } catch (e) {
    console.error(`${where}: ${e.message}`);
    failures++;
  }
});
lines.on("close", () => {
  console.log(`KEDA schemas: ${checked} valid, ${failures} invalid`);
  process.exit(failures ? 1 : 0);
});
