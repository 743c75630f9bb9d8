-- Quotas per period: an account's own period (NULL: the deployment's
-- default, quotas.period), and the start of the period its count belongs to.
-- A count from an earlier period is read as zero and replaced at the next flush.
ALTER TABLE accounts ADD COLUMN quota_period TEXT;
ALTER TABLE accounts ADD COLUMN api_calls_period INTEGER NOT NULL DEFAULT 0;
