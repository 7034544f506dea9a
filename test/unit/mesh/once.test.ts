/**
 * The crash-safe "once" protocol on the real local once-store: which attempt runs the action, and
 * what a later pass concludes from what an interrupted one left behind.
 */
import { describe, expect, it } from 'vitest';
import { MemoryOnceStore } from '../../../lib/adapters/local/memory-stores.js';
import { onceAcrossCrashes } from '../../../lib/mesh/index.js';

describe('onceAcrossCrashes', () => {
  it('runs the action once and reports it done, then already done', async () => {
    const once = new MemoryOnceStore();
    let runs = 0;
    const action = async () => {
      runs += 1;
      return 'trace-1';
    };
    expect(await onceAcrossCrashes(once, 'mesh#MB#1', 'pass-a', action)).toEqual({
      status: 'done',
      result: 'trace-1',
    });
    expect(await onceAcrossCrashes(once, 'mesh#MB#1', 'pass-b', action)).toEqual({
      status: 'already',
      result: 'trace-1',
    });
    expect(runs).toBe(1);
  });

  it('runs again after an action that failed, and after a pass that died after claiming', async () => {
    const once = new MemoryOnceStore();
    await expect(
      onceAcrossCrashes(once, 'mesh#MB#2', 'pass-a', async () => {
        throw new Error('queue down');
      }),
    ).rejects.toThrow('queue down');
    await once.putIfAbsent('mesh#MB#2#try#2', 'pass-that-died', 60); // claimed attempt 2, then died
    const outcome = await onceAcrossCrashes(once, 'mesh#MB#2', 'pass-c', async () => 'trace-3');
    expect(outcome).toEqual({ status: 'done', result: 'trace-3' });
    expect(await once.putIfAbsent('mesh#MB#2#done#2', 'x', 60)).toEqual({
      created: false,
      existing: 'void:pass-c',
    });
  });

  it('finds a result recorded by a pass that died before acknowledging', async () => {
    const once = new MemoryOnceStore();
    await once.putIfAbsent('mesh#MB#3#try#1', 'pass-a', 60);
    await once.putIfAbsent('mesh#MB#3#done#1', 'done:trace-a', 60);
    let ran = false;
    const outcome = await onceAcrossCrashes(once, 'mesh#MB#3', 'pass-b', async () => {
      ran = true;
      return 'trace-b';
    });
    expect(outcome).toEqual({ status: 'already', result: 'trace-a' });
    expect(ran).toBe(false);
  });

  it('gives up after 100 interrupted attempts instead of looping', async () => {
    const once = new MemoryOnceStore();
    for (let n = 1; n <= 100; n += 1) await once.putIfAbsent(`mesh#MB#4#try#${n}`, `dead-${n}`, 60);
    expect(await onceAcrossCrashes(once, 'mesh#MB#4', 'pass-z', async () => 'never')).toEqual({
      status: 'gave-up',
      attempts: 100,
    });
  });
});
