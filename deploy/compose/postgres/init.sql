-- Run once by the postgres image when its data directory is new, as the
-- superuser, in the database "app". The roles follow README.md, "Least-
-- privilege PostgreSQL role".

-- The relay: REPLICATION to stream from the slot, CONNECT to this database.
-- It needs no privilege on the outbox table: rows arrive through logical
-- decoding. The init service runs `outbox-relay setup` as the superuser,
-- which creates the table, the publication, the slot and the relay's state
-- table; the grant service then lets this role write the state table (the
-- confirmed horizon that prune reads, and slot recoveries).
CREATE ROLE outbox_relay LOGIN REPLICATION PASSWORD 'outbox_relay';
GRANT CONNECT ON DATABASE app TO outbox_relay;

-- The application (the writer service): inserts events into the outbox
-- table that setup creates.
CREATE ROLE app LOGIN PASSWORD 'app';
GRANT CONNECT ON DATABASE app TO app;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT INSERT ON TABLES TO app;
