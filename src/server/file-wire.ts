/**
 * What the file service and its clients share about proto/file.proto: its name, the service
 * name and the largest data piece. Kept apart so that a client (the CLI) loads no server code.
 */
export const FILE_PROTO = 'file.proto';
export const FILE_SERVICE = 'cairn.file.Files';
/** Largest data piece in either direction. */
export const FILE_PIECE_BYTES = 1024 * 1024;
