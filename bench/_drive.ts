import { phase, startLocalCluster } from './local-cluster.js';
import { MetaClient } from '../src/meta/client.js';
const cluster = await startLocalCluster(3);
const meta = new MetaClient({ endpoints: cluster.endpoints });
const small = Buffer.alloc(4096, 7);
const n = Number(process.env.N ?? 2000);
const conc = Number(process.env.CONC ?? 1);
const op = process.env.OP ?? 'put';
try {
  for (;;) { try { await meta.mkdir('/d'); break; } catch { await new Promise((r) => setTimeout(r, 200)); } }
  await phase(300, 4, (i) => meta.putFile(`/w/f${i}`, small, { mkdirs: true }));
  await phase(300, 1, (i) => meta.mkdir(`/d/w${i}`));
  const c0 = cluster.cpuMs();
  const r = await phase(n, conc, (i) => (op === 'put' ? meta.putFile(`/p/f${i}`, small, { mkdirs: true }) : op === 'mkdir' ? meta.mkdir(`/d/m${i}`) : meta.putFile(`/p/f${i}`, Buffer.alloc(0), { mkdirs: true })));
  const c1 = cluster.cpuMs();
  console.log(op, conc, r, 'cpu ms/op per node', c1.map((c, i) => ((c - c0[i]!) / n).toFixed(2)));
} finally { meta.close(); await cluster.stop(); }
