-- The auth service (services/auth/): roles, row-level security that holds, and
-- the rights of its login role `nexanest_auth`, which owns nothing.
--
-- Every row belongs to one user and is visible only while `app.user_id` names
-- that user; the service sets it per transaction (services/rls.py). FORCE makes
-- the policies bind the owner too, so that nothing but a superuser (backups)
-- reads past them.
--
-- Login must find a user by email before the acting user is known. That is the
-- one thing the function auth_login_lookup does, as the owner (SECURITY
-- DEFINER): for one exact email, the four fields a login needs. While it runs it
-- sets `app.login_email`, and the owner's extra policy admits that row alone; the
-- setting is cleared before it returns. Outside the function the owner's policy
-- admits nothing, and `nexanest_auth` is not the owner, so setting
-- `app.login_email` itself opens nothing.

ALTER TABLE users
    ADD COLUMN role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin'));

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
-- All commands and all columns, password_hash included.
CREATE POLICY users_self ON users
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
-- CURRENT_USER: the owner, who runs the migrations (and owns the function below).
CREATE POLICY users_login_lookup ON users FOR SELECT TO CURRENT_USER
    USING (email = nullif(current_setting('app.login_email', true), '')::citext);

ALTER TABLE user_profiles FORCE ROW LEVEL SECURITY;
ALTER POLICY user_profiles_owner ON user_profiles
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);

CREATE FUNCTION auth_login_lookup(login_email TEXT)
    RETURNS TABLE (user_id UUID, password_hash TEXT, role TEXT, is_active BOOLEAN)
    LANGUAGE plpgsql
    SECURITY DEFINER
    -- Pinned: a caller's search_path must not choose the objects the owner uses.
    SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM pg_catalog.set_config('app.login_email', coalesce(login_email, ''), true);
    RETURN QUERY
        SELECT u.user_id, u.password_hash, u.role, u.is_active
          FROM public.users AS u
         WHERE u.email OPERATOR(public.=) login_email::public.citext;
    PERFORM pg_catalog.set_config('app.login_email', '', true);
END
$$;
REVOKE ALL ON FUNCTION auth_login_lookup(TEXT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth_login_lookup(TEXT) TO nexanest_auth;

-- Registration writes a new user's own row (role: the default, never chosen by
-- the client); a password change and a rehash at login rewrite its hash. No
-- deletes, and nothing of user_profiles, which the service does not use yet.
GRANT SELECT ON users TO nexanest_auth;
GRANT INSERT (user_id, email, password_hash, display_name) ON users TO nexanest_auth;
GRANT UPDATE (password_hash, updated_at) ON users TO nexanest_auth;
