-- Where a job ran when it was submitted for a target other than the engine's
-- own, such as `kube:kind-dev` from the desktop app. NULL for the engine's
-- own target. A rerun uses it so that the new job runs where the old one did.
ALTER TABLE jobs ADD COLUMN target TEXT;
