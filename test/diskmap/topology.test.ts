/** The topology file: sizes, defaults, and errors that name the field. */
import { describe, expect, it } from 'vitest';
import { parseSize, parseTopology, resolveDiskRef, resolveMachineRef, topologyToJson } from '../../src/diskmap/index.js';

describe('topology file', () => {
  it('parses sizes with units', () => {
    expect(parseSize('6TB')).toBe(6e12);
    expect(parseSize('64GiB')).toBe(64 * 2 ** 30);
    expect(parseSize('1.5 TiB')).toBe(1.5 * 2 ** 40);
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('6XB')).toBeUndefined();
    expect(parseSize('-1')).toBeUndefined();
  });

  it('fills defaults and round-trips through its canonical JSON', () => {
    const t = parseTopology({ machines: [{ machine: 3, disks: [{ disk: 0, capacity: '1TB' }, { disk: 1, capacity: 5000, class: 'ssd', state: 'draining', incarnation: '0xab' }] }] });
    expect(t.name).toBe('cairn');
    const m = t.machines[0];
    expect(m?.name).toBe('m3');
    expect(m?.dc).toBe(0);
    expect(m?.disks[0]).toMatchObject({ class: 'hdd', state: 'active', capacityBytes: 1e12 });
    expect(m?.disks[1]?.incarnation).toBe(0xabn);
    // A left-out incarnation is derived from the location: the same file gives the same ids.
    expect(m?.disks[0]?.incarnation).toBe(parseTopology({ machines: [{ machine: 3, disks: [{ disk: 0, capacity: 1 }] }] }).machines[0]?.disks[0]?.incarnation);
    expect(parseTopology(JSON.parse(JSON.stringify(topologyToJson(t))))).toEqual(t);
  });

  it.each([
    [{ machines: [] }, /machines: at least one machine/],
    [{ machines: [{ machine: 1, disks: [{ disk: 0, capacity: '6 parsecs' }] }] }, /machines\.0\.disks\.0\.capacity: must be a positive whole number of bytes/],
    [{ machines: [{ machine: 1, disks: [{ disk: 0, capacity: 1, state: 'broken' }] }] }, /machines\.0\.disks\.0\.state/],
    [{ machines: [{ machine: 256, disks: [] }] }, /machines\.0\.machine/],
    [{ machines: [{ machine: 1, disks: [{ disk: 0, capacity: 1, incarnation: 'xyz' }] }] }, /machines\.0\.disks\.0\.incarnation: must be a 64-bit hex string/],
    [{ machines: [{ machine: 1, disks: [] }, { machine: 1, disks: [] }] }, /machines\.1\.machine: location .* also used by machines\.0/],
    [{ machines: [{ machine: 1, disks: [{ disk: 2, capacity: 1 }, { disk: 2, capacity: 1 }] }] }, /machines\.0\.disks\.1\.disk: disk number 2 is also used/],
    ['not an object', /topo\.json: \(root\)/],
  ])('refuses %j naming the field', (value, re) => {
    expect(() => parseTopology(value, 'topo.json')).toThrow(re);
  });

  it('resolves disk and machine references', () => {
    const t = parseTopology({ machines: [{ name: 'box1', machine: 7, rack: 2, disks: [{ disk: 0, capacity: 1 }, { disk: 1, capacity: 1 }] }] });
    expect(resolveDiskRef(t, 'box1/1')[0]?.d.disk).toBe(1);
    expect(resolveDiskRef(t, '0.0.2.7.0')[0]?.d.disk).toBe(0);
    expect(resolveMachineRef(t, '0.0.2.7')[0]?.name).toBe('box1');
    expect(() => resolveDiskRef(t, 'box1/9')).toThrow(/no such disk/);
    expect(() => resolveDiskRef(t, 'box2/0')).toThrow(/machine "box2"/);
    expect(() => resolveDiskRef(t, 'junk')).toThrow(/expected MACHINE\/DISK/);
  });
});
