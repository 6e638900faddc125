-- Who is an admin now, for the notifications service (issue 12).
--
-- Operational alerts go to the admins who subscribed to them (notifications'
-- ops_subscriptions). The role is checked with the subscriber's token when they
-- subscribe, but the operator may demote or deactivate an admin afterwards, here in
-- users; such a user must get no further operational alerts. So the notifications
-- service asks, each time it sends one, which of its subscribers are active admins now.
--
-- It asks through one function, auth_active_admins(candidates), run as the owner
-- (SECURITY DEFINER, search_path pinned) in the manner of auth_login_lookup: while it
-- runs it sets `app.admin_check`, and the owner's extra policy then admits the rows of
-- admins, and those only; the setting is cleared before it returns. It answers ids
-- only, and only of the candidates it is given. The notifications service's login
-- role nexanest_notifications may connect to this database and execute the function,
-- and nothing more: it holds no grant on any table here. CONNECT is granted here, by
-- the database's owner, because this function is the only reason for it (the deploy
-- scripts grant each service role its own database).

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO nexanest_notifications', current_database());
END
$$;

CREATE POLICY users_admin_check ON users FOR SELECT TO CURRENT_USER
    USING (role = 'admin' AND current_setting('app.admin_check', true) = 'on');

CREATE FUNCTION auth_active_admins(candidates UUID[])
    RETURNS TABLE (user_id UUID)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_catalog.set_config('app.admin_check', 'on', true);
    RETURN QUERY
        SELECT u.user_id
          FROM public.users AS u
         WHERE u.user_id = ANY (candidates) AND u.role = 'admin' AND u.is_active
         ORDER BY u.user_id;
    PERFORM pg_catalog.set_config('app.admin_check', '', true);
END
$$;
REVOKE ALL ON FUNCTION auth_active_admins(UUID[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth_active_admins(UUID[]) TO nexanest_notifications;
