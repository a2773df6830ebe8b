-- The table the opt-in user_recommendations asset fills (CFREC_RECOMMENDATIONS_TABLE=user_recommendations).
-- Run once in the Supabase SQL editor. The pipeline writes as the database owner (SUPABASE_DB_URL),
-- which row-level security does not restrict; the app reads with the signed-in user's JWT.
create table if not exists public.user_recommendations (
    user_id       text        not null,  -- the app's user id (auth.users.id as text)
    tmdb_id       bigint      not null,
    rank          integer     not null check (rank >= 1),  -- 1 = best
    score         real        not null,  -- predicted rating, clipped to 0.5..5
    model_version text        not null,
    created_at    timestamptz not null,
    primary key (user_id, rank)
);

alter table public.user_recommendations enable row level security;

-- Each signed-in user reads only their own rows; nobody else reads or writes through the API.
drop policy if exists "users read their own recommendations" on public.user_recommendations;
create policy "users read their own recommendations"
    on public.user_recommendations for select
    to authenticated
    using ((select auth.uid())::text = user_id);

-- Supabase's default privileges give anon, authenticated and service_role ALL on every new public
-- table. Row-level security filters SELECT/INSERT/UPDATE/DELETE rows but not TRUNCATE, REFERENCES or
-- TRIGGER (a signed-in user could empty the table), so keep only what the policy is for: reading.
revoke all on public.user_recommendations from public, anon, authenticated, service_role;
grant select on public.user_recommendations to authenticated;
grant select on public.user_recommendations to service_role;  -- server-side code with the service key
