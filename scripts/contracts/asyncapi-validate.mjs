import { Parser, fromFile } from '@asyncapi/parser';
const parser = new Parser();
const file = process.argv[2];
const { document, diagnostics } = await fromFile(parser, file).parse();
let errors = 0;
for (const d of diagnostics) {
  const sev = ['error', 'warning', 'info', 'hint'][d.severity] ?? d.severity;
  console.log(`${sev}: ${d.code}: ${d.message} at ${d.path.join('.')}`);
  if (d.severity === 0) errors++;
}
if (!document || errors > 0) { console.log(`${file}: ${errors} error(s)`); process.exit(1); }
console.log(`${file}: valid AsyncAPI ${document.version()}`);
