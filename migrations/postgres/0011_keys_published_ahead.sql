-- A signing key is published (JWKS) before it signs: `sesame keys rotate`
-- sets when it starts, so that relying parties holding JWKS from a cache
-- know it by its first token. Keys made before sign from their creation.
ALTER TABLE signing_keys ADD COLUMN IF NOT EXISTS signs_from BIGINT NOT NULL DEFAULT 0;
