-- Portfolio service, part 2 (issue 11): a ledger the service can keep, and row-level
-- security that binds the service.
--
-- Bookkeeping, as services/portfolio/ledger.py applies it (the README's Portfolio section):
-- * transactions are buy, sell, deposit or withdraw. Buys and sells name a symbol, a
--   quantity and a price (and fees); deposits and withdrawals move cash only: symbol,
--   quantity and price are NULL and `amount` is the sum moved.
-- * The cash balance is a column of the portfolio (not a holding row): a cash row would be
--   a holding without a symbol, quantity or price, and every reader of holdings would have
--   to tell the two apart. Cash never goes below zero: a buy or a withdrawal beyond it, like
--   a sell beyond the holding, is refused (409) by the service, and this CHECK is the last
--   line behind it.
-- * Average cost: a holding keeps its quantity and total cost basis (price times quantity
--   plus fees of its buys). A sell takes out cost_basis * sold / held (all of it when the
--   whole holding goes) and realises proceeds - fees - that cost, booked on the sell's
--   transaction row and summed per holding in `realised`. A holding sold down to zero stays
--   (quantity 0) so that its realised P&L stays visible.
-- * Money is NUMERIC(38, 9): quantities and prices are NUMERIC(20, 9), and their products
--   and sums need more integer digits. Amounts are rounded to 9 places, half to even.
-- * Each transaction gets the next `seq` of its portfolio (portfolios.last_seq, taken under
--   the portfolio's row lock): the order the ledger was applied in, and the cursor of the
--   paginated transaction list.
--
-- Row-level security: every table ENABLEs and FORCEs it, so the policies bind the owner
-- too. The service role nexanest_portfolio (owns nothing, bypasses nothing) sees and
-- writes only the rows whose user_id is `app.user_id`, which services/rls.py sets per
-- transaction. The owner (the migration role, CURRENT_USER below) may read everything: it
-- could ALTER the tables anyway, and the snapshot function below runs as it.

-- Transactions -----------------------------------------------------------------------------
ALTER TABLE transactions RENAME COLUMN side TO kind;
ALTER TABLE transactions DROP CONSTRAINT transactions_side_check;
ALTER TABLE transactions DROP CONSTRAINT transactions_quantity_check;
ALTER TABLE transactions DROP CONSTRAINT transactions_price_check;
ALTER TABLE transactions
    ALTER COLUMN symbol DROP NOT NULL,
    ALTER COLUMN quantity DROP NOT NULL,
    ALTER COLUMN price DROP NOT NULL,
    ALTER COLUMN fees TYPE NUMERIC(38, 9),
    ALTER COLUMN executed_at SET DEFAULT now(),
    ADD COLUMN amount       NUMERIC(38, 9),
    ADD COLUMN realised_pnl NUMERIC(38, 9),
    ADD COLUMN seq          BIGINT,
    ADD COLUMN recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now();

-- Rows written before this migration (there were no writers; kept correct all the same).
UPDATE transactions t
   SET amount = round(t.quantity * t.price, 9),
       seq = n.seq
  FROM (SELECT transaction_id, row_number() OVER (PARTITION BY portfolio_id ORDER BY executed_at, transaction_id) AS seq
          FROM transactions) n
 WHERE n.transaction_id = t.transaction_id;

ALTER TABLE transactions
    ALTER COLUMN amount SET NOT NULL,
    ALTER COLUMN seq SET NOT NULL,
    ADD CONSTRAINT transactions_kind_check CHECK (kind IN ('buy', 'sell', 'deposit', 'withdraw')),
    ADD CONSTRAINT transactions_shape_check CHECK (
        CASE WHEN kind IN ('buy', 'sell')
             THEN symbol IS NOT NULL AND quantity > 0 AND price > 0
             ELSE symbol IS NULL AND quantity IS NULL AND price IS NULL AND fees = 0
        END),
    ADD CONSTRAINT transactions_amount_check CHECK (amount >= 0 AND (kind IN ('buy', 'sell') OR amount > 0)),
    ADD CONSTRAINT transactions_fees_check CHECK (fees >= 0),
    -- Realised P&L is booked on sells only.
    ADD CONSTRAINT transactions_realised_check CHECK (kind = 'sell' OR realised_pnl IS NULL),
    ADD CONSTRAINT transactions_symbol_check CHECK (symbol ~ '^[A-Z0-9][A-Z0-9._:/-]{0,31}$'),
    ADD CONSTRAINT transactions_seq_key UNIQUE (portfolio_id, seq);
-- Pagination walks (portfolio_id, seq) backwards: the unique index above serves it, so the
-- time index of 0001 has no reader left.
DROP INDEX transactions_portfolio_time_idx;

-- Portfolios: cash and the ledger's sequence --------------------------------------------------
ALTER TABLE portfolios
    ADD COLUMN cash     NUMERIC(38, 9) NOT NULL DEFAULT 0 CONSTRAINT portfolios_cash_check CHECK (cash >= 0),
    ADD COLUMN last_seq BIGINT         NOT NULL DEFAULT 0 CONSTRAINT portfolios_last_seq_check CHECK (last_seq >= 0),
    ADD CONSTRAINT portfolios_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    ADD CONSTRAINT portfolios_name_check CHECK (length(name) BETWEEN 1 AND 100),
    -- The target of the composite foreign keys below.
    ADD CONSTRAINT portfolios_id_user_key UNIQUE (portfolio_id, user_id);
UPDATE portfolios p SET last_seq = s.last_seq
  FROM (SELECT portfolio_id, max(seq) AS last_seq FROM transactions GROUP BY portfolio_id) s
 WHERE s.portfolio_id = p.portfolio_id;

-- Holdings: realised P&L --------------------------------------------------------------------
ALTER TABLE holdings
    ALTER COLUMN cost_basis TYPE NUMERIC(38, 9),
    ADD COLUMN realised NUMERIC(38, 9) NOT NULL DEFAULT 0,
    ADD CONSTRAINT holdings_quantity_check CHECK (quantity >= 0),
    ADD CONSTRAINT holdings_symbol_check CHECK (symbol ~ '^[A-Z0-9][A-Z0-9._:/-]{0,31}$'),
    ADD CONSTRAINT holdings_cost_basis_check CHECK (cost_basis >= 0 AND (quantity > 0 OR cost_basis = 0));

-- A holding or transaction belongs to the user of its portfolio, whatever a writer claims:
-- the foreign keys name both columns. With the policies' WITH CHECK (user_id = acting
-- user), no row can hang in another user's portfolio.
ALTER TABLE holdings
    DROP CONSTRAINT holdings_portfolio_id_fkey,
    ADD CONSTRAINT holdings_portfolio_fkey FOREIGN KEY (portfolio_id, user_id)
        REFERENCES portfolios (portfolio_id, user_id) ON DELETE CASCADE;
ALTER TABLE transactions
    DROP CONSTRAINT transactions_portfolio_id_fkey,
    ADD CONSTRAINT transactions_portfolio_fkey FOREIGN KEY (portfolio_id, user_id)
        REFERENCES portfolios (portfolio_id, user_id) ON DELETE CASCADE;

-- Row-level security ------------------------------------------------------------------------
DROP POLICY portfolios_owner ON portfolios;
DROP POLICY holdings_owner ON holdings;
DROP POLICY transactions_owner ON transactions;

ALTER TABLE portfolios FORCE ROW LEVEL SECURITY;
ALTER TABLE holdings FORCE ROW LEVEL SECURITY;
ALTER TABLE transactions FORCE ROW LEVEL SECURITY;

CREATE POLICY portfolios_acting_user ON portfolios TO nexanest_portfolio
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
CREATE POLICY holdings_acting_user ON holdings TO nexanest_portfolio
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);
CREATE POLICY transactions_acting_user ON transactions TO nexanest_portfolio
    USING (user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (user_id = nullif(current_setting('app.user_id', true), '')::uuid);

-- The owner reads (and writes) everything; FORCE would otherwise hide every row from it.
CREATE POLICY portfolios_owner_role ON portfolios TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY holdings_owner_role ON holdings TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY transactions_owner_role ON transactions TO CURRENT_USER USING (true) WITH CHECK (true);

-- What the service may do, and no more. Holdings and transactions are never deleted by the
-- service (a portfolio's go with it, through the foreign keys); transactions are never
-- changed. UPDATE on portfolios.cash also lets SELECT ... FOR UPDATE lock a portfolio.
GRANT SELECT, INSERT, DELETE ON portfolios TO nexanest_portfolio;
GRANT UPDATE (cash, last_seq) ON portfolios TO nexanest_portfolio;
GRANT SELECT, INSERT ON holdings TO nexanest_portfolio;
GRANT UPDATE (quantity, cost_basis, realised, updated_at) ON holdings TO nexanest_portfolio;
GRANT SELECT, INSERT ON transactions TO nexanest_portfolio;

-- Snapshots -----------------------------------------------------------------------------------
-- The snapshot worker values every portfolio of every user, and it must do so without a
-- superuser or BYPASSRLS. This function is its only way across users: it runs as the
-- owner (SECURITY DEFINER, whose owner policies above let it read), returns only what a
-- valuation needs (ids, cash, positions: no names, no transactions), and only
-- nexanest_portfolio may EXECUTE it. The worker connects as that role because the
-- service has no other (deploy creates one login role per service); the API half of the
-- service never calls it. search_path is pinned so that no object a caller creates can
-- stand in for the tables or operators it uses (and the tables are schema-qualified).
CREATE FUNCTION portfolio_snapshot_inputs()
    RETURNS TABLE (portfolio_id UUID, user_id UUID, cash NUMERIC, symbol TEXT, quantity NUMERIC,
                   cost_basis NUMERIC, realised NUMERIC)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.portfolio_id, p.user_id, p.cash, h.symbol, h.quantity, h.cost_basis, h.realised
      FROM public.portfolios p
      LEFT JOIN public.holdings h ON h.portfolio_id = p.portfolio_id
     ORDER BY p.portfolio_id, h.symbol
$$;
REVOKE ALL ON FUNCTION portfolio_snapshot_inputs() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portfolio_snapshot_inputs() TO nexanest_portfolio;
