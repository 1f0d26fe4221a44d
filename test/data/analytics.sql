-- Legitimate analytical SQL that a reader must be able to run. Statements are separated by
-- lines of "-- ---". Each must classify as something other than sql.other; the guardrail test
-- also runs them through the gateway with a read-only principal and counts false rejections.
-- ---
SELECT aid, abalance, rank() OVER (PARTITION BY bid ORDER BY abalance DESC) AS r FROM pgbench_accounts WHERE aid < 100
-- ---
SELECT bid, percentile_cont(0.5) WITHIN GROUP (ORDER BY abalance) AS median FROM pgbench_accounts GROUP BY bid
-- ---
WITH a AS (SELECT bid, count(*) AS n FROM pgbench_accounts GROUP BY bid), b AS (WITH inner_cte AS (SELECT * FROM a) SELECT * FROM inner_cte WHERE n > 0) SELECT * FROM b ORDER BY bid
-- ---
SELECT b.bid, top.aid FROM pgbench_branches b CROSS JOIN LATERAL (SELECT aid FROM pgbench_accounts a WHERE a.bid = b.bid ORDER BY abalance DESC LIMIT 3) top
-- ---
SELECT '{"a": {"b": [1, 2, 3]}}'::jsonb -> 'a' -> 'b' ->> 1 AS second, '{"x": 1}'::jsonb ? 'x' AS has_x, jsonb_path_query_array('{"a":[1,2]}', '$.a[*] ? (@ > 1)')
-- ---
SELECT date_trunc('day', now()) AS d, generate_series(1, 3) AS g
-- ---
SELECT bid, sum(abalance) FILTER (WHERE abalance > 0) AS positive, count(*) FROM pgbench_accounts GROUP BY ROLLUP (bid)
-- ---
SELECT DISTINCT ON (bid) bid, aid, abalance FROM pgbench_accounts ORDER BY bid, abalance DESC
-- ---
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) SELECT sum(i) FROM n
-- ---
SELECT aid, lag(abalance) OVER w, lead(abalance) OVER w FROM pgbench_accounts WHERE aid < 50 WINDOW w AS (ORDER BY aid)
-- ---
SELECT string_agg(tid::text, ',' ORDER BY tid) FROM pgbench_tellers
-- ---
SELECT * FROM pgbench_accounts a WHERE EXISTS (SELECT 1 FROM pgbench_history h WHERE h.aid = a.aid) LIMIT 5
-- ---
SELECT CASE WHEN abalance > 0 THEN 'credit' WHEN abalance < 0 THEN 'debit' ELSE 'zero' END AS kind, count(*) FROM pgbench_accounts GROUP BY 1
-- ---
SELECT array_agg(aid) FILTER (WHERE aid % 2 = 0), jsonb_agg(jsonb_build_object('aid', aid)) FROM pgbench_accounts WHERE aid <= 10
-- ---
EXPLAIN SELECT * FROM pgbench_accounts WHERE aid = 1
-- ---
SELECT t.bid, x.total FROM pgbench_tellers t JOIN (SELECT bid, sum(tbalance) AS total FROM pgbench_tellers GROUP BY bid) x USING (bid) ORDER BY 1 LIMIT 10
-- ---
SELECT regexp_replace(filler, '\s+', ' ', 'g'), length(filler) FROM pgbench_branches LIMIT 1
-- ---
SELECT abalance FROM pgbench_accounts WHERE aid = 42
-- ---
SELECT (SELECT max(abalance) FROM pgbench_accounts) - (SELECT min(abalance) FROM pgbench_accounts) AS spread
-- ---
VALUES (1, 'one'), (2, 'two') ORDER BY 1
-- ---
SELECT * FROM pgbench_accounts TABLESAMPLE SYSTEM (1) LIMIT 1
-- ---
SELECT bid, grouping(bid), count(*) FROM pgbench_accounts GROUP BY GROUPING SETS ((bid), ())
