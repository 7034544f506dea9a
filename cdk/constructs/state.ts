import { Aws, Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { AUDIT_TABLE, BLOB_BUCKET, ONCE_TABLE } from '../../lib/infra/definitions.js';

/** Properties of {@link PipelineState}. */
export interface PipelineStateProps {
  /** Customer-managed key for the tables and the blob bucket. */
  readonly dataKey: kms.IKey;
  /**
   * A claim-check and delivery bucket the team brings (`existingBlobBucketObj`).
   * @default - a versioned, KMS-encrypted bucket with access logs and lifecycle rules
   */
  readonly existingBlobBucket?: s3.IBucket;
  /** What happens to tables and buckets when they leave the stack. */
  readonly removalPolicy: RemovalPolicy;
  /**
   * Name the tables as in lib/infra/definitions.ts and the blob bucket `itk3-blobs-<account>-<region>`.
   * @default false - CloudFormation generates names
   */
  readonly physicalNames?: boolean;
  /**
   * How long claim-check objects live. They are only needed while a message is in flight.
   * @default - `BLOB_BUCKET.expireDays` (2 days; objects are also removed when their trace ends)
   */
  readonly claimCheckExpiry?: Duration;
  /**
   * How long S3 server access logs of the blob bucket are kept.
   * @default Duration.days(400) - as long as the audit trail
   */
  readonly accessLogRetention?: Duration;
}

/**
 * The pipeline's state:
 * - the once-store table (jti replay, duplicate message and document ids);
 * - the audit table (one item per event, keyed by trace);
 * - the blob bucket for claim-check payloads and folder-type deliveries;
 * - the bucket that receives the blob bucket's server access logs.
 *
 * Tables: on-demand, TTL, point-in-time recovery, the customer-managed key, and deletion protection
 * while the removal policy is RETAIN. Buckets: public access blocked, TLS 1.2+ only, versioned blob
 * bucket with the customer-managed key and lifecycle rules.
 */
export class PipelineState extends Construct {
  /** Once-store table (`ONCE_TABLE`). */
  readonly onceTable: dynamodb.Table;
  /** Audit trail table (`AUDIT_TABLE`). */
  readonly auditTable: dynamodb.Table;
  /** Claim-check and delivery bucket (`BLOB_BUCKET`), created or brought by the team. */
  readonly blobBucket: s3.IBucket;
  /** Server access log bucket of {@link blobBucket}; none when the team brings the bucket. */
  readonly accessLogBucket?: s3.Bucket;

  constructor(scope: Construct, id: string, props: PipelineStateProps) {
    super(scope, id);
    const { dataKey, removalPolicy } = props;
    const retain = removalPolicy === RemovalPolicy.RETAIN;

    const tableDefaults = {
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED,
      encryptionKey: dataKey,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      deletionProtection: retain,
      removalPolicy,
    } as const;

    this.onceTable = new dynamodb.Table(this, 'OnceTable', {
      ...tableDefaults,
      tableName: props.physicalNames ? ONCE_TABLE.name : undefined,
      partitionKey: { name: ONCE_TABLE.partitionKey, type: dynamodb.AttributeType.STRING },
      timeToLiveAttribute: ONCE_TABLE.ttlAttribute,
    });

    this.auditTable = new dynamodb.Table(this, 'AuditTable', {
      ...tableDefaults,
      tableName: props.physicalNames ? AUDIT_TABLE.name : undefined,
      partitionKey: { name: AUDIT_TABLE.partitionKey, type: dynamodb.AttributeType.STRING },
      sortKey: { name: AUDIT_TABLE.sortKey, type: dynamodb.AttributeType.STRING },
      timeToLiveAttribute: AUDIT_TABLE.ttlAttribute,
    });

    if (props.existingBlobBucket) {
      // The team's bucket keeps its own encryption, logging and lifecycle: claim checks are removed
      // when their trace ends, and an expiry rule for `claim-check/` is theirs to add (docs/DEPLOY.md).
      this.blobBucket = props.existingBlobBucket;
    } else {
      const accessLogBucket = new s3.Bucket(this, 'AccessLogBucket', {
        // S3 server access log delivery supports only SSE-S3 on the target bucket.
        encryption: s3.BucketEncryption.S3_MANAGED,
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        enforceSSL: true,
        minimumTLSVersion: 1.2,
        lifecycleRules: [
          {
            id: 'ExpireAccessLogs',
            expiration: props.accessLogRetention ?? Duration.days(400),
            abortIncompleteMultipartUploadAfter: Duration.days(1),
          },
        ],
        removalPolicy,
      });
      Validations.of(accessLogBucket).acknowledge({
        id: 'AwsSolutions-S1',
        reason:
          'This bucket is the server access log target of the blob bucket; logging it to itself would loop and logging it elsewhere only moves the finding.',
      });

      this.accessLogBucket = accessLogBucket;
      this.blobBucket = new s3.Bucket(this, 'BlobBucket', {
        bucketName: props.physicalNames ? `${BLOB_BUCKET.name}-${Aws.ACCOUNT_ID}-${Aws.REGION}` : undefined,
        encryption: s3.BucketEncryption.KMS,
        encryptionKey: dataKey,
        // One data key per bucket instead of one KMS call per object.
        bucketKeyEnabled: true,
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        enforceSSL: true,
        minimumTLSVersion: 1.2,
        versioned: true,
        serverAccessLogsBucket: accessLogBucket,
        serverAccessLogsPrefix: 'blob-bucket/',
        lifecycleRules: [
          {
            id: 'ExpireClaimChecks',
            prefix: BLOB_BUCKET.claimCheckPrefix,
            expiration: props.claimCheckExpiry ?? Duration.days(BLOB_BUCKET.expireDays),
            noncurrentVersionExpiration: Duration.days(1),
          },
          {
            id: 'TidyVersionsAndUploads',
            noncurrentVersionExpiration: Duration.days(30),
            expiredObjectDeleteMarker: true,
            abortIncompleteMultipartUploadAfter: Duration.days(1),
          },
        ],
        removalPolicy,
      });
    }
  }
}
