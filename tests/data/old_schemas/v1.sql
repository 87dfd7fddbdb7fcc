BEGIN TRANSACTION;
CREATE TABLE co2_bins (
    unit_id  TEXT NOT NULL,
    bucket   INTEGER NOT NULL,  -- unixepoch(date || ' ' || time) / 10800
    co2_sum  REAL NOT NULL,
    co2_n    INTEGER NOT NULL,
    temp_sum REAL NOT NULL,
    temp_n   INTEGER NOT NULL,
    PRIMARY KEY (unit_id, bucket)
) WITHOUT ROWID;
INSERT INTO "co2_bins" VALUES('co2unit-0123456789ab',166068,7000.0,10,4.5,1);
INSERT INTO "co2_bins" VALUES('co2unit-0123456789ab',166076,7000.0,10,4.5,1);
INSERT INTO "co2_bins" VALUES('co2unit-0123456789ab',166084,7000.0,10,4.5,1);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166060,7000.0,10,4.5,1);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166067,14000.0,20,9.0,2);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166068,27280.0,39,9.0,2);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166069,7000.0,10,5.5,1);
CREATE TABLE co2_readings (
    unit_id     TEXT NOT NULL,
    nickname    TEXT,
    date        TEXT NOT NULL,
    time        TEXT NOT NULL,
    temp        REAL,
    flash_count INTEGER,
    co2_01      INTEGER,
    co2_02      INTEGER,
    co2_03      INTEGER,
    co2_04      INTEGER,
    co2_05      INTEGER,
    co2_06      INTEGER,
    co2_07      INTEGER,
    co2_08      INTEGER,
    co2_09      INTEGER,
    co2_10      INTEGER,
    src_file    INTEGER NOT NULL,  -- import_files.id: where the row came from
    src_line    INTEGER NOT NULL   -- 1-based line number in that file
);
INSERT INTO "co2_readings" VALUES('co2unit-0123456789ab','varanger-04','2026-11-01','12:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,1,1);
INSERT INTO "co2_readings" VALUES('co2unit-0123456789ab','varanger-04','2026-11-02','12:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,1,2);
INSERT INTO "co2_readings" VALUES('co2unit-0123456789ab','varanger-04','2026-11-03','12:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,1,3);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','10:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,2,1);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','11:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,2,2);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','12:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,2,3);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','13:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,2,4);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc',NULL,'2026-11-01','14:00:10',NULL,1,700,700,700,700,700,700,700,700,700,700,2,7);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','14:30:10',NULL,1,680,NULL,700,700,700,700,700,700,700,700,2,8);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','15:30:10',5.5,1,700,700,700,700,700,700,700,700,700,700,2,9);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-10-31','12:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,3,1);
CREATE TABLE deploy_durations_tiered (
    unit_id  TEXT,
    nickname TEXT,
    site     TEXT,
    tier     INTEGER,
    status   TEXT,
    start_ts TEXT,  -- UTC, 'YYYY-MM-DD HH:MM:SS'; a bare date means its midnight
    end_ts   TEXT,
    note     TEXT
);
INSERT INTO "deploy_durations_tiered" VALUES('co2unit-30aea42a50bc','varanger-03','vj_re_sn_4',3,'deployed','2026-10-30 00:00:00','2026-11-05 00:00:00',NULL);
INSERT INTO "deploy_durations_tiered" VALUES('co2unit-0123456789ab','varanger-04','vj_re_sn_4',3,'deployed','2026-10-30 00:00:00',NULL,NULL);
INSERT INTO "deploy_durations_tiered" VALUES('co2unit-cccccccccccc','lab-7','lab',1,'lab_check','2026-11-01 00:00:00',NULL,NULL);
CREATE TABLE dropped_lines (
    src_file INTEGER NOT NULL,
    src_line INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    content  TEXT NOT NULL  -- repr() of the start of the line
);
INSERT INTO "dropped_lines" VALUES(2,5,'dropped: 1970 date (clock lost)','''co2unit-30aea42a50bc\tvaranger-03\t1970-01-01\t00:00:42\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700''');
INSERT INTO "dropped_lines" VALUES(2,6,'dropped: not a co2unit- line','''test\t1\t2\t3''');
INSERT INTO "dropped_lines" VALUES(2,9,'recovered: row cut off','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t15:0''');
INSERT INTO "dropped_lines" VALUES(2,10,'dropped: not a co2unit- line','''''');
INSERT INTO "dropped_lines" VALUES(2,11,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t16:00:10\t5.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t34986\t28228\t32626\t1101''');
INSERT INTO "dropped_lines" VALUES(2,12,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t17:00:10\t5.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t34986\t28228\t32626\t1101''');
INSERT INTO "dropped_lines" VALUES(2,13,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t18:00:10\t5.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t34986\t28228\t32626\t1101''');
INSERT INTO "dropped_lines" VALUES(2,14,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t19:00:10\t5.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t34986\t28228\t32626\t1101''');
INSERT INTO "dropped_lines" VALUES(2,15,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t20:00:10\t5.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\tNone\tNone\tNone\tNone\tNone''');
INSERT INTO "dropped_lines" VALUES(2,16,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t20:30:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t1''');
INSERT INTO "dropped_lines" VALUES(2,17,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t21:00:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t21:30:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t34986\t28''');
INSERT INTO "dropped_lines" VALUES(2,18,'dropped: non-printing bytes','''\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t22:00:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t34986\t28228\t32626\t1101''');
INSERT INTO "dropped_lines" VALUES(3,3,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t16:00:10\t5.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t34986\t28228\t32626\t1101''');
INSERT INTO "dropped_lines" VALUES(3,4,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-10-31\t23:00:10\t5.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t34986\t28228\t32626\t1101''');
INSERT INTO "dropped_lines" VALUES(4,1,'dropped: wrong field count','''co2unit-cccccccccccc\tlab-7\t2026-11-01\t00:00:10\t21.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t40\t34986\t28228\t32626\t1100''');
INSERT INTO "dropped_lines" VALUES(4,2,'dropped: wrong field count','''co2unit-cccccccccccc\tlab-7\t2026-11-01\t01:00:10\t21.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t41\t34986\t28228\t32626\t1101''');
INSERT INTO "dropped_lines" VALUES(4,3,'dropped: wrong field count','''co2unit-cccccccccccc\tlab-7\t2026-11-01\t02:00:10\t21.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t42\t34986\t28228\t32626\t1102''');
INSERT INTO "dropped_lines" VALUES(4,4,'dropped: wrong field count','''co2unit-cccccccccccc\tlab-7\t2026-11-01\t03:00:10\t21.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\tNone\tNone\tNone\tNone\tNone''');
INSERT INTO "dropped_lines" VALUES(4,5,'dropped: wrong field count','''co2unit-cccccccccccc\tlab-7\t2026-11-01\t04:00:10\t21.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t44\t34986\t28228\t32626\t1104''');
INSERT INTO "dropped_lines" VALUES(4,6,'dropped: wrong field count','''co2unit-cccccccccccc\tlab-7\t2026-11-01\t05:00:10\t21.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t34986\t28228\t32626\t1105''');
INSERT INTO "dropped_lines" VALUES(5,1,'dropped: wrong field count','''co2unit-cccccccccccc\tlab-7\t2026-11-02\t00:00:10\t21.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t40\t34986\t28228\t32626\t1100''');
INSERT INTO "dropped_lines" VALUES(5,2,'dropped: wrong field count','''co2unit-cccccccccccc\tlab-7\t2026-11-02\t01:00:10\t21.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t41\t34986\t28228\t32626\t1101''');
INSERT INTO "dropped_lines" VALUES(5,3,'dropped: wrong field count','''co2unit-cccccccccccc\tlab-7\t2026-11-02\t02:00:10\t21.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t42\t34986\t28228\t32626\t1102''');
INSERT INTO "dropped_lines" VALUES(5,4,'dropped: wrong field count','''co2unit-cccccccccccc\tlab-7\t2026-11-02\t03:00:10\t21.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\tNone\tNone\tNone\tNone\tNone''');
INSERT INTO "dropped_lines" VALUES(5,5,'dropped: wrong field count','''co2unit-cccccccccccc\tlab-7\t2026-11-02\t04:00:10\t21.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t44\t34986\t28228\t32626\t1104''');
INSERT INTO "dropped_lines" VALUES(5,6,'dropped: wrong field count','''co2unit-cccccccccccc\tlab-7\t2026-11-02\t05:00:10\t21.0\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t34986\t28228\t32626\t1105''');
INSERT INTO "dropped_lines" VALUES(8,4,'dropped: wrong field count','''not a ping line''');
INSERT INTO "dropped_lines" VALUES(10,5,'dropped: tier is not an integer','''co2unit-cccccccccccc\tlab-7\tlab\tnot-a-tier\tdeployed\t2026-11-02\t\t''');
CREATE TABLE error_logs (
    unit_id  TEXT NOT NULL,
    idate    TEXT,  -- inferred: odate, or the last good date before a 1970-01-01 entry
    itime    TEXT,
    etype    TEXT,  -- uncaught, watchdog, signal, backoff, transmit, or NULL
    odate    TEXT,  -- as written in the headline
    otime    TEXT,
    level    TEXT,
    message  TEXT,  -- headline message and its continuation lines (tracebacks)
    src_file INTEGER NOT NULL,
    src_line INTEGER NOT NULL,
    UNIQUE (src_file, src_line)
);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-25','03:11:24','transmit','2026-10-25','03:11:24','INFO','transmitting',6,1);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-25','03:12:00','uncaught','2026-10-25','03:12:00','EXC','Uncaught exception
Traceback (most recent call last):
  File "main.py", line 10, in <module>
OSError: [Errno 113] EHOSTUNREACH',6,2);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-25','03:12:00','watchdog','1970-01-01','00:00:12','WARN','watchdog reset',6,6);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-26','03:10:00','backoff','2026-10-26','03:10:00','WARN','LTE backoff 600 s',6,7);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-26','03:10:00',NULL,NULL,NULL,NULL,'  a continuation of the last entry of errors-0000',7,1);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-26','03:10:00','signal','1970-01-01','00:00:15','INFO','Signal quality 18',7,2);
CREATE TABLE import_files (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,     -- readings, errors, pings, deployments
    path       TEXT NOT NULL UNIQUE,  -- relative to its root: data:<rel> or db:<rel>
    size       INTEGER NOT NULL,  -- stat seen at the last import
    mtime_ns   INTEGER NOT NULL,
    inode      INTEGER NOT NULL,
    check_hash TEXT NOT NULL,     -- of the first and the last imported bytes: spots a replacement
    bytes_done INTEGER NOT NULL,  -- complete lines imported up to here
    lines_done INTEGER NOT NULL,
    carry      TEXT               -- parser state carried on (error logs: last good date)
);
INSERT INTO "import_files" VALUES(1,'readings','data:co2unit-0123456789ab/data/readings/readings-0000.tsv',297,1796698421555308715,2286410,'2bc7822628bae9d2c27cbf211f7b287f6c40cbf5',297,3,NULL);
INSERT INTO "import_files" VALUES(2,'readings','data:co2unit-30aea42a50bc/data/readings/readings-0000.tsv',1934,1796698421554172605,2286401,'3964a919c2c888c3f95459b9893f0ec5e6d775c8',1934,18,NULL);
INSERT INTO "import_files" VALUES(3,'readings','data:co2unit-30aea42a50bc/superseded/20261102T000000.000000Z/data/readings/readings-0000.tsv',448,1796698421554766018,2286406,'94b30915be7e45856dc093a3a9d8e23594ba2483',448,4,NULL);
INSERT INTO "import_files" VALUES(4,'readings','data:co2unit-cccccccccccc/data/readings/readings-0000.tsv',719,1796698421555814954,2286414,'255a4889aae01c0e418d140fdfdfdad9f5e58bdc',719,6,NULL);
INSERT INTO "import_files" VALUES(5,'readings','data:co2unit-cccccccccccc/data/readings/readings-0001.tsv',719,1796698421556046168,2286415,'daf8538a8798826913c232d7224b3fc8f9fc54f3',719,6,NULL);
INSERT INTO "import_files" VALUES(6,'errors','data:co2unit-30aea42a50bc/errors/errors-0000.txt',324,1796698421556318529,2286417,'2c3d1bd7e142669a34bb0641bedbcccf2fb42dc3',274,6,'2026-10-26 03:10:00');
INSERT INTO "import_files" VALUES(7,'errors','data:co2unit-30aea42a50bc/errors/errors-0001.txt',100,1796698421556498146,2286418,'cb4f33638533f74b26acb7d1757ca98e624bf950',50,1,'2026-10-26 03:10:00');
INSERT INTO "import_files" VALUES(8,'pings','db:pings/pings-0000.tsv',206,1796698421556878649,2286421,'c751d8b6ae893b78f77658e226000b3f3ad8756a',206,4,NULL);
INSERT INTO "import_files" VALUES(9,'pings','data:otherserver/var/pings/pings-0000.tsv',129,1796698421557371253,2286425,'b5700511c9a4067b6110c2b3fc002e5541eab0dd',129,2,NULL);
INSERT INTO "import_files" VALUES(10,'deployments','file:/tmp/tmpoijwunc3/tree/remote_data/manual/deploy_durations_tiered.tsv',321,1796698421557663601,2286427,'739c6d7c39d26fc6b912a4ad8f3b31aa3f5e6848',321,5,NULL);
CREATE TABLE import_log (
    run_ts  TEXT NOT NULL,
    stage   TEXT NOT NULL,  -- readings, pings, errors, deployments
    -- imported, duplicate, recovered, dropped, nulled, inferred, noted, deleted, binned, files
    outcome TEXT NOT NULL,
    reason  TEXT NOT NULL,
    count   INTEGER NOT NULL
);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','binned','rows added to co2_bins',11);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','dropped','1970 date (clock lost)',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','dropped','non-printing bytes',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','dropped','not a co2unit- line',2);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','dropped','wrong field count',21);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','duplicate','same unit, date and time',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','imported','rows',11);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','nulled','empty field',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','nulled','nickname ending in NICK',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','nulled','truncated field',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','recovered','row cut off',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','files','read',5);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','readings','files','replaced or gone',0);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','errors','imported','entries',6);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','errors','inferred','date from the last good entry',2);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','errors','nulled','continuation lines without a headline',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','errors','files','read',2);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','errors','files','replaced or gone',0);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','pings','dropped','wrong field count',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','pings','duplicate','already in pings (live from the server, or another log)',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','pings','imported','rows',4);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','pings','files','read',2);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','pings','files','replaced or gone',0);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','deployments','dropped','tier is not an integer',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','deployments','imported','rows',3);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','deployments','files','read',1);
INSERT INTO "import_log" VALUES('2026-12-08 02:53:41','deployments','files','replaced or gone',0);
CREATE TABLE pings (
    ping_ts   TEXT NOT NULL,
    ping_date TEXT NOT NULL,
    ping_time TEXT NOT NULL,
    unit_id   TEXT NOT NULL,
    nickname  TEXT,
    rssi_raw  INTEGER,
    rssi_dbm  INTEGER,
    ber_raw   INTEGER
);
INSERT INTO "pings" VALUES('2026-11-01T03:10:05.123456','2026-11-01','03:10:05','co2unit-30aea42a50bc','varanger-03',18,-77,99);
INSERT INTO "pings" VALUES('2026-11-01T03:11:00.000000','2026-11-01','03:11:00','co2unit-0123456789ab',NULL,NULL,NULL,NULL);
INSERT INTO "pings" VALUES('2026-11-02T03:11:00.000001','2026-11-02','03:11:00','co2unit-cccccccccccc','lab-7',20,-73,99);
INSERT INTO "pings" VALUES('2026-11-02T03:12:00.500000','2026-11-02','03:12:00','co2unit-0123456789ab',NULL,9,-95,NULL);
CREATE TABLE toolchain_state (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO "toolchain_state" VALUES('co2_bins_rowid','11');
CREATE UNIQUE INDEX pings_unit_ts ON pings (unit_id, ping_ts);
CREATE INDEX pings_ts ON pings (ping_ts);
CREATE UNIQUE INDEX co2_readings_key ON co2_readings (unit_id, date, time);
CREATE INDEX error_logs_unit ON error_logs (unit_id, idate, itime);
CREATE INDEX dropped_lines_file ON dropped_lines (src_file, src_line);
COMMIT;
PRAGMA user_version = 0;
