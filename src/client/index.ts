/**
 * The client: the file API over the node's durable write-back cache and the commit pipeline.
 * Import from here; the files behind it are internal.
 */
export { CairnFs, cairnFsOptionsSchema, chunkerConfigSchema, MAX_OPEN_HANDLES, MAX_READ_BYTES } from './fs.js';
export { MetaAdapter, ChunkAdapter, type ChunkPlacement } from './adapters.js';
export type { CairnFsOptions, OpenOptions, CommitStatus, Stat, Mode } from './fs.js';
export type { CommitState } from './cached-file.js';
export { FAILPOINTS } from './pipeline.js';
export { fixedChunker, fastCdcChunker, makeChunker, cutAll } from './chunker.js';
export type { Chunker, ChunkerConfig } from './chunker.js';
export type * from './ports.js';
