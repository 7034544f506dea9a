/**
 * The ITK3 routing header `itk` (docs/WIRE-FORMAT.md): carried in both the JWE and the JWS protected
 * headers, and bound to the MessageHeader at verify.
 */
import * as z from 'zod';

export const ItkRoutingSchema = z
  .object({
    from: z.string().min(1).max(64),
    to: z.string().min(1).max(64),
    event: z.string().min(1).max(64),
    id: z.string().min(1).max(128),
  })
  .strict();
export type ItkRouting = z.infer<typeof ItkRoutingSchema>;
