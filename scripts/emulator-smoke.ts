/**
 * Capability smoke test of a local AWS emulator (LOCAL-AWS.md §7): does it still do what the
 * pipeline relies on? Run right after the emulator is healthy, so a changed emulator version fails
 * loudly on its first run instead of somewhere inside an integration test.
 *
 *   npx tsx scripts/emulator-smoke.ts [endpoint] [--no-dynamodb]
 *
 * endpoint defaults to AWS_ENDPOINT_URL, then http://127.0.0.1:4566. `--no-dynamodb` skips check 5
 * (LocalStack host mode has no DynamoDB offline). Check 3 (ECDH) is not run: the pipeline does not
 * use ECDH. Prints one line per check; exits 1 if any check fails.
 *
 * Talks to the emulator through the real AWS SDK v3 clients, with the same settings as the adapters
 * (lib/adapters/aws/clients.ts), and removes what it created.
 */
import { constants, createPublicKey, publicEncrypt, randomBytes, verify } from 'node:crypto';
import {
  CreateTableCommand,
  DeleteTableCommand,
  DescribeTableCommand,
  PutItemCommand,
} from '@aws-sdk/client-dynamodb';
import {
  CreateKeyCommand,
  DecryptCommand,
  GetPublicKeyCommand,
  ScheduleKeyDeletionCommand,
  SignCommand,
  VerifyCommand,
} from '@aws-sdk/client-kms';
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
} from '@aws-sdk/client-sqs';
import { type AwsClients, createAwsClients } from '../lib/adapters/aws/clients.js';
import { awsErrorName } from '../lib/adapters/aws/errors.js';

/** Upper bound for one check, so a hung emulator fails the run instead of stalling CI. */
const CHECK_TIMEOUT_MS = 30_000;

interface Check {
  id: number;
  name: string;
  skip?: string;
  run: (clients: AwsClients, cleanup: Cleanup) => Promise<string>;
}

type Cleanup = (label: string, action: () => Promise<unknown>) => void;

function fail(message: string): never {
  throw new Error(message);
}

const suffix = randomBytes(4).toString('hex');

const checks = (noDynamo: boolean): Check[] => [
  {
    id: 1,
    name: 'KMS RSA-OAEP-SHA-256 decrypt of an offline ciphertext',
    async run({ kms }, cleanup) {
      const { KeyMetadata } = await kms.send(
        new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT', Description: 'itk3 smoke' }),
      );
      const keyId = KeyMetadata?.KeyId ?? fail('CreateKey returned no key id');
      cleanup('kms key', () =>
        kms.send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 })),
      );
      const { PublicKey } = await kms.send(new GetPublicKeyCommand({ KeyId: keyId }));
      if (!PublicKey) fail('GetPublicKey returned no key');
      const publicKey = createPublicKey({ key: Buffer.from(PublicKey), format: 'der', type: 'spki' });
      const cek = randomBytes(32);
      const ciphertext = publicEncrypt(
        { key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
        cek,
      );
      const { Plaintext } = await kms.send(
        new DecryptCommand({
          KeyId: keyId,
          CiphertextBlob: ciphertext,
          EncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
        }),
      );
      if (!Plaintext || !Buffer.from(Plaintext).equals(cek))
        fail('Decrypt did not return the encrypted value');
      return 'node:crypto OAEP-SHA-256 ciphertext → KMS Decrypt → same 32 bytes';
    },
  },
  {
    id: 2,
    name: 'KMS ECDSA P-256 sign, offline verify, Verify of a tampered message throws',
    async run({ kms }, cleanup) {
      const { KeyMetadata } = await kms.send(
        new CreateKeyCommand({
          KeySpec: 'ECC_NIST_P256',
          KeyUsage: 'SIGN_VERIFY',
          Description: 'itk3 smoke',
        }),
      );
      const keyId = KeyMetadata?.KeyId ?? fail('CreateKey returned no key id');
      cleanup('kms key', () =>
        kms.send(new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 })),
      );
      const message = Buffer.from('eyJhbGciOiJFUzI1NiJ9.c21va2U');
      const { Signature } = await kms.send(
        new SignCommand({
          KeyId: keyId,
          Message: message,
          MessageType: 'RAW',
          SigningAlgorithm: 'ECDSA_SHA_256',
        }),
      );
      if (!Signature) fail('Sign returned no signature');
      const { PublicKey } = await kms.send(new GetPublicKeyCommand({ KeyId: keyId }));
      if (!PublicKey) fail('GetPublicKey returned no key');
      const publicKey = createPublicKey({ key: Buffer.from(PublicKey), format: 'der', type: 'spki' });
      if (!verify('sha256', message, { key: publicKey, dsaEncoding: 'der' }, Signature)) {
        fail('the DER signature does not verify offline against the SPKI');
      }
      try {
        const out = await kms.send(
          new VerifyCommand({
            KeyId: keyId,
            Message: Buffer.from('tampered'),
            MessageType: 'RAW',
            Signature,
            SigningAlgorithm: 'ECDSA_SHA_256',
          }),
        );
        fail(
          `Verify of a tampered message returned SignatureValid=${String(out.SignatureValid)} instead of throwing`,
        );
      } catch (error) {
        if (awsErrorName(error) !== 'KMSInvalidSignatureException') throw error;
      }
      return 'DER signature verifies offline; tampered Verify throws KMSInvalidSignatureException';
    },
  },
  {
    id: 4,
    name: 'SQS redrive after maxReceiveCount 2, binary attributes, QueueUrl on 127.0.0.1',
    async run({ sqs }, cleanup) {
      const dlq = (await sqs.send(new CreateQueueCommand({ QueueName: `itk3-smoke-dlq-${suffix}` })))
        .QueueUrl;
      if (!dlq) fail('CreateQueue returned no URL');
      cleanup('dlq', () => sqs.send(new DeleteQueueCommand({ QueueUrl: dlq })));
      const host = new URL(dlq).hostname;
      if (host !== '127.0.0.1') fail(`QueueUrl host is ${host}, not 127.0.0.1 (${dlq})`);
      const dlqArn = (
        await sqs.send(new GetQueueAttributesCommand({ QueueUrl: dlq, AttributeNames: ['QueueArn'] }))
      ).Attributes?.QueueArn;
      if (!dlqArn) fail('DLQ has no QueueArn');
      const queue = (
        await sqs.send(
          new CreateQueueCommand({
            QueueName: `itk3-smoke-${suffix}`,
            Attributes: {
              RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 2 }),
            },
          }),
        )
      ).QueueUrl;
      if (!queue) fail('CreateQueue returned no URL');
      cleanup('queue', () => sqs.send(new DeleteQueueCommand({ QueueUrl: queue })));
      const binary = Uint8Array.from([0, 1, 2, 0xfe, 0xff]);
      await sqs.send(
        new SendMessageCommand({
          QueueUrl: queue,
          MessageBody: 'smoke',
          MessageAttributes: { blob: { DataType: 'Binary', BinaryValue: binary } },
        }),
      );
      for (const attempt of [1, 2]) {
        const { Messages } = await sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: queue,
            VisibilityTimeout: 0,
            WaitTimeSeconds: 1,
            MessageAttributeNames: ['All'],
          }),
        );
        const got = Messages?.[0] ?? fail(`receive ${attempt}: no message`);
        const value = got.MessageAttributes?.blob?.BinaryValue;
        if (!value || !Buffer.from(value).equals(Buffer.from(binary)))
          fail('binary attribute did not round-trip');
      }
      const third = await sqs.send(new ReceiveMessageCommand({ QueueUrl: queue, WaitTimeSeconds: 1 }));
      if (third.Messages?.length) fail('third receive still returned the message from the source queue');
      const moved = await sqs.send(new ReceiveMessageCommand({ QueueUrl: dlq, WaitTimeSeconds: 2 }));
      if (moved.Messages?.[0]?.Body !== 'smoke') fail('the message is not in the DLQ after maxReceiveCount');
      return 'received twice, moved to the DLQ on the third receive; binary attribute intact';
    },
  },
  {
    id: 5,
    name: 'DynamoDB conditional put (attribute_not_exists) fails the second time',
    ...(noDynamo ? { skip: 'no DynamoDB on this emulator (--no-dynamodb)' } : {}),
    async run({ dynamodb }, cleanup) {
      const table = `itk3-smoke-${suffix}`;
      await dynamodb.send(
        new CreateTableCommand({
          TableName: table,
          KeySchema: [{ AttributeName: 'k', KeyType: 'HASH' }],
          AttributeDefinitions: [{ AttributeName: 'k', AttributeType: 'S' }],
          BillingMode: 'PAY_PER_REQUEST',
        }),
      );
      cleanup('table', () => dynamodb.send(new DeleteTableCommand({ TableName: table })));
      for (let i = 0; i < 50; i += 1) {
        const { Table } = await dynamodb.send(new DescribeTableCommand({ TableName: table }));
        if (Table?.TableStatus === 'ACTIVE') break;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const put = () =>
        dynamodb.send(
          new PutItemCommand({
            TableName: table,
            Item: { k: { S: 'jti-1' }, v: { S: 'first' } },
            ConditionExpression: 'attribute_not_exists(#k)',
            ExpressionAttributeNames: { '#k': 'k' },
          }),
        );
      await put();
      try {
        await put();
      } catch (error) {
        if (awsErrorName(error) === 'ConditionalCheckFailedException') {
          return 'second put failed with ConditionalCheckFailedException';
        }
        throw error;
      }
      fail('the second conditional put succeeded');
    },
  },
];

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const noDynamo = args.includes('--no-dynamodb');
  const endpoint =
    args.find((a) => !a.startsWith('--')) ?? process.env.AWS_ENDPOINT_URL ?? 'http://127.0.0.1:4566';
  const clients = createAwsClients({
    endpoint,
    region: process.env.AWS_REGION ?? 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
  console.log(`emulator smoke test against ${endpoint}`);
  let failures = 0;
  let passed = 0;
  let skipped = 0;
  for (const check of checks(noDynamo)) {
    const label = `${check.id}. ${check.name}`;
    if (check.skip) {
      skipped += 1;
      console.log(`SKIP ${label}: ${check.skip}`);
      continue;
    }
    const undo: { label: string; action: () => Promise<unknown> }[] = [];
    const started = Date.now();
    try {
      const detail = await withTimeout(
        check.run(clients, (l, action) => undo.push({ label: l, action })),
        CHECK_TIMEOUT_MS,
      );
      passed += 1;
      console.log(`PASS ${label} (${Date.now() - started} ms): ${detail}`);
    } catch (error) {
      failures += 1;
      const name = awsErrorName(error);
      const message = error instanceof Error ? error.message : String(error);
      console.log(
        `FAIL ${label} (${Date.now() - started} ms): ${name && name !== 'Error' ? `${name}: ` : ''}${message}`,
      );
    }
    for (const { label: what, action } of undo.reverse()) {
      await withTimeout(action(), 5_000).catch((error: unknown) =>
        console.log(
          `     (cleanup of ${what} failed: ${error instanceof Error ? error.message : String(error)})`,
        ),
      );
    }
  }
  for (const client of Object.values(clients)) client.destroy();
  console.log(`smoke: ${passed} passed, ${failures} failed, ${skipped} skipped`);
  return failures === 0 ? 0 : 1;
}

process.exitCode = await main();
