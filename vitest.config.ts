import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Cluster tests start real processes; two cores are shared by everything.
    maxWorkers: 2,
    env: { CAIRN_LOG_LEVEL: process.env.CAIRN_LOG_LEVEL ?? 'silent' },
  },
});
