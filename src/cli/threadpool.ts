/**
 * libuv's thread pool serves every fs, crypto and zlib call of a process; its default of 4
 * threads lets four concurrent shard fsyncs (~10 ms each on a busy disk) hold every thread while
 * the short fs calls of other requests queue behind them (measured in docs/chunk.md). A node
 * daemon wants more. The size is read once, when the pool starts, so this module is imported
 * first by the CLI's entry point; launchers (systemd unit, `cairn local up`) also set it in the
 * environment, which is the reliable way. An operator's own setting is kept.
 */
export const THREADPOOL_SIZE = 16;

if (process.env.UV_THREADPOOL_SIZE === undefined) process.env.UV_THREADPOOL_SIZE = String(THREADPOOL_SIZE);
