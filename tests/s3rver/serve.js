// Starts the S3 emulator for the tests: node serve.js PORT DIRECTORY
// Credentials are s3rver's defaults (S3RVER / S3RVER); it listens on 127.0.0.1 only.
'use strict';
const S3rver = require('@20minutes/s3rver');

const [port, directory] = process.argv.slice(2);
const server = new S3rver({ port: Number(port), address: '127.0.0.1', directory, silent: true });
server.run().then(
  () => process.stdout.write(`listening on 127.0.0.1:${port}\n`),
  (err) => { process.stderr.write(`${err}\n`); process.exit(1); },
);
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close().then(() => process.exit(0)));
}
