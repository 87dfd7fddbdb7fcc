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
INSERT INTO "co2_bins" VALUES('co2unit-0123456789ab',166095,7000.0,10,3.0,1);
INSERT INTO "co2_bins" VALUES('co2unit-0123456789ab',166096,7000.0,10,3.5,1);
INSERT INTO "co2_bins" VALUES('co2unit-0123456789ab',166108,7000.0,10,4.0,1);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166060,7000.0,10,4.5,1);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166068,26690.0,37,45.4375,2);
INSERT INTO "co2_bins" VALUES('co2unit-30aea42a50bc',166069,27280.0,39,14.5,3);
INSERT INTO "co2_bins" VALUES('co2unit-cccccccccccc',166083,7000.0,10,4.5,1);
INSERT INTO "co2_bins" VALUES('co2unit-dddddddddddd',166066,0.0,0,0.0,0);
INSERT INTO "co2_bins" VALUES('co2unit-dddddddddddd',166074,0.0,0,0.0,0);
INSERT INTO "co2_bins" VALUES('co2unit-dddddddddddd',166082,0.0,0,0.0,0);
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
INSERT INTO "co2_readings" VALUES('co2unit-0123456789ab','varanger-04','2026-11-04','23:59:10',3.0,1,700,700,700,700,700,700,700,700,700,700,1,1);
INSERT INTO "co2_readings" VALUES('co2unit-0123456789ab','varanger-04','2026-11-05','00:00:10',3.5,1,700,700,700,700,700,700,700,700,700,700,1,2);
INSERT INTO "co2_readings" VALUES('co2unit-0123456789ab','varanger-04','2026-11-06','12:00:10',4.0,1,700,700,700,700,700,700,700,700,700,700,1,3);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','13:00:10',23.4375,1,680,700,710,710,700,690,700,700,700,700,2,1);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','13:30:10',NULL,0,NULL,700,700,700,700,700,700,700,700,700,2,2);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','14:00:10',22.0,0,0,200010,800,800,800,800,800,800,800,800,2,3);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','14:30:10',85.0,1,700,700,700,700,700,700,700,700,700,700,2,7);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc',NULL,'2026-11-01','15:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,2,8);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','15:30:10',NULL,1,680,NULL,700,700,700,700,700,700,700,700,2,9);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','16:30:10',5.5,1,700,700,700,700,700,700,700,700,700,700,2,10);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-11-01','17:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,2,11);
INSERT INTO "co2_readings" VALUES('co2unit-30aea42a50bc','varanger-03','2026-10-31','12:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,3,2);
INSERT INTO "co2_readings" VALUES('co2unit-cccccccccccc',NULL,'2026-11-03','10:00:10',4.5,1,700,700,700,700,700,700,700,700,700,700,4,1);
INSERT INTO "co2_readings" VALUES('co2unit-dddddddddddd',NULL,'2026-11-01','06:00:10',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,5,1);
INSERT INTO "co2_readings" VALUES('co2unit-dddddddddddd',NULL,'2026-11-02','06:00:10',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,5,2);
INSERT INTO "co2_readings" VALUES('co2unit-dddddddddddd',NULL,'2026-11-03','06:00:10',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,5,3);
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
INSERT INTO "deploy_durations_tiered" VALUES('co2unit-30aea42a50bc','varanger-03','vj_re_sn_4',3,'deployed','2026-10-30 00:00:00','2026-11-05 00:00:00','first # not a comment');
INSERT INTO "deploy_durations_tiered" VALUES('co2unit-0123456789ab','varanger-04','vj_re_sn_4',3,'deployed','2026-11-05 00:00:00',NULL,NULL);
INSERT INTO "deploy_durations_tiered" VALUES('co2unit-30aea42a50bc','varanger-03',NULL,1,'en_route','2026-11-05 00:00:00','2026-11-07 10:00:00',NULL);
INSERT INTO "deploy_durations_tiered" VALUES('co2unit-30aea42a50bc','varanger-03',NULL,1,'lab_check','2026-11-07 10:00:00',NULL,NULL);
INSERT INTO "deploy_durations_tiered" VALUES('co2unit-dddddddddddd',NULL,'ko_ho_me_1',2,'deployed','2026-11-01 00:00:00',NULL,'all None');
INSERT INTO "deploy_durations_tiered" VALUES('co2unit-eeeeeeeeeeee','x','ko_ho_me_1',2,'deployed','2026-11-02 00:00:00',NULL,NULL);
CREATE TABLE dropped_lines (
    src_file INTEGER NOT NULL,
    src_line INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    content  TEXT NOT NULL  -- repr() of the start of the line
);
INSERT INTO "dropped_lines" VALUES(2,4,'dropped: 1970 date (clock lost)','''co2unit-30aea42a50bc\tvaranger-03\t1970-01-01\t00:00:42\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700''');
INSERT INTO "dropped_lines" VALUES(2,5,'dropped: non-printing bytes','''co2unit-30aea42a50bc\tvar\x07anger-03\t2026-11-01\t14:10:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700''');
INSERT INTO "dropped_lines" VALUES(2,6,'dropped: not a co2unit- line','''test\t1\t2\t3''');
INSERT INTO "dropped_lines" VALUES(2,10,'recovered: row cut off','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t16:0''');
INSERT INTO "dropped_lines" VALUES(2,11,'recovered: non-printing bytes before a row','''\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00''');
INSERT INTO "dropped_lines" VALUES(2,12,'dropped: non-printing bytes','''\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00''');
INSERT INTO "dropped_lines" VALUES(2,13,'dropped: unparseable field','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t17:30:10\t4.5\t1\t680\tabc\t700\t700\t700\t700\t700\t700\t700\t700''');
INSERT INTO "dropped_lines" VALUES(2,14,'dropped: garbled hw_id','''co2unit-XYZ\tvaranger-03\t2026-11-01\t17:40:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700''');
INSERT INTO "dropped_lines" VALUES(2,15,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t18:00:10\t4.5\t1\t7''');
INSERT INTO "dropped_lines" VALUES(2,16,'dropped: non-printing bytes','''co2unit-30aea42a50bc\tvar\udcffanger\t2026-11-01\t18:10:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700''');
INSERT INTO "dropped_lines" VALUES(2,17,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t18:20:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t34986\t28228\t32626\t1101''');
INSERT INTO "dropped_lines" VALUES(2,18,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t18:21:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\tNone\tNone\tNone\tNone\tNone''');
INSERT INTO "dropped_lines" VALUES(2,19,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t18:22:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t3x986\t1\t2\t3''');
INSERT INTO "dropped_lines" VALUES(2,20,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t18:23:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t1''');
INSERT INTO "dropped_lines" VALUES(2,21,'dropped: not a co2unit- line','''''');
INSERT INTO "dropped_lines" VALUES(2,22,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2000-01-01\t00:01:00\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t45\t34986\t28228\t32626\t1101''');
INSERT INTO "dropped_lines" VALUES(2,23,'dropped: wrong field count','''co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t18:24:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t4co2unit-30aea42a50bc\tvaranger-03\t2026-11-01\t18:25:10\t4.5\t1\t700\t700\t700\t700\t700\t700\t700\t700\t700\t700\t4''');
INSERT INTO "dropped_lines" VALUES(7,4,'dropped: wrong field count','''not a ping line''');
INSERT INTO "dropped_lines" VALUES(9,11,'dropped: tier is not an integer','''co2unit-eeeeeeeeeeee\tx\tsomewhere\tnot-a-tier\tdeployed\t2026-11-02\t\t''');
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
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-25','03:12:00','signal','1970-01-01','00:00:15','INFO','Signal quality 18',6,7);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-26','03:10:00','backoff','2026-10-26','03:10:00','WARN','LTE backoff 600 s',6,8);
INSERT INTO "error_logs" VALUES('co2unit-30aea42a50bc','2026-10-26','03:11:00',NULL,'2026-10-26','03:11:00','INFO','something else',6,9);
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
INSERT INTO "import_files" VALUES(1,'readings','data:co2unit-0123456789ab/data/readings/readings-0000.tsv',297,1795965008585106243,2155640,'af2809cb6a0552c740eb01d45bafe266200baaee',297,3,NULL);
INSERT INTO "import_files" VALUES(2,'readings','data:co2unit-30aea42a50bc/data/readings/readings-0000.tsv',2376,1795965008583868838,2155601,'27b4203fe35fd7c87269f1930a2c2e51561cb7ab',2326,23,NULL);
INSERT INTO "import_files" VALUES(3,'readings','data:co2unit-30aea42a50bc/superseded/20261102T000000.000000Z/data/readings/readings-0000.tsv',202,1795965008584581875,2155636,'028747d3b4077b424092773a14d5138612798faf',202,2,NULL);
INSERT INTO "import_files" VALUES(4,'readings','data:co2unit-cccccccccccc/data/readings/readings-0000.tsv',92,1795965008585732481,2155644,'51e12e0bfbbb77a324396cccd62d7ed6f1f70d50',92,1,NULL);
INSERT INTO "import_files" VALUES(5,'readings','data:co2unit-dddddddddddd/data/readings/readings-0000.tsv',318,1795965008586265201,2155648,'aa4746a70049824e8c9b55eb0415d78ab3fa3056',318,3,NULL);
INSERT INTO "import_files" VALUES(6,'errors','data:co2unit-30aea42a50bc/errors/errors-0000.txt',421,1795965008586531626,2155665,'0a55c1ae31baa3a31259784193a97c2d243a8aca',374,8,'2026-10-26 03:11:00');
INSERT INTO "import_files" VALUES(7,'pings','db:pings/pings-0000.tsv',212,1795965008586919310,2155668,'65ccd91c3bde2d67b31c72a6a498ae4d447e36c7',212,4,NULL);
INSERT INTO "import_files" VALUES(8,'pings','data:otherserver/var/pings/pings-0000.tsv',129,1795965008587434554,2155672,'b94eb58fe1ba73d3936c8d4ad719f6f0984a5726',129,2,NULL);
INSERT INTO "import_files" VALUES(9,'deployments','file:/tmp/v1tree/remote_data/manual/deploy_durations_tiered.tsv',667,1795965008587692116,2155674,'2cecf61bbe6461bdcd0319e9f6ca19c289f87a7d',667,11,NULL);
CREATE TABLE import_log (
    run_ts  TEXT NOT NULL,
    stage   TEXT NOT NULL,  -- readings, pings, errors, deployments
    -- imported, duplicate, recovered, dropped, nulled, inferred, noted, deleted, binned, files
    outcome TEXT NOT NULL,
    reason  TEXT NOT NULL,
    count   INTEGER NOT NULL
);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','binned','rows added to co2_bins',16);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','dropped','1970 date (clock lost)',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','dropped','garbled hw_id',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','dropped','non-printing bytes',3);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','dropped','not a co2unit- line',2);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','dropped','unparseable field',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','dropped','wrong field count',7);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','duplicate','same unit, date and time',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','imported','rows',16);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','nulled','empty field',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','nulled','nickname ending in NICK',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','nulled','truncated field',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','recovered','non-printing bytes before a row',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','recovered','row cut off',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','files','read',5);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','readings','files','replaced or gone',0);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','errors','imported','entries',6);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','errors','inferred','date from the last good entry',2);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','errors','files','read',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','errors','files','replaced or gone',0);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','pings','dropped','wrong field count',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','pings','duplicate','already in pings (live from the server, or another log)',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','pings','imported','rows',4);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','pings','files','read',2);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','pings','files','replaced or gone',0);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','deployments','dropped','tier is not an integer',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','deployments','imported','rows',6);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','deployments','files','read',1);
INSERT INTO "import_log" VALUES('2026-11-29 15:10:08','deployments','files','replaced or gone',0);
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
INSERT INTO "pings" VALUES('2026-11-06T03:11:00.000001','2026-11-06','03:11:00','co2unit-0123456789ab','varanger-04',20,-73,99);
INSERT INTO "pings" VALUES('2026-11-02T03:12:00.500000','2026-11-02','03:12:00','co2unit-dddddddddddd',NULL,9,-95,NULL);
CREATE TABLE toolchain_state (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO "toolchain_state" VALUES('co2_bins_rowid','16');
INSERT INTO "toolchain_state" VALUES('output:co2_tiered_all_hires.svg','readings=5/3235/8979825042925553664/10778169 bins=16 deployments=1/667/1795965008587692032/2155674 xmin=None xmax=None min_tier=None max_tier=None recent_days=14.0 co2_max=None');
INSERT INTO "toolchain_state" VALUES('output:co2_tiered_recent_hires.svg','readings=5/3235/8979825042925553664/10778169 bins=16 deployments=1/667/1795965008587692032/2155674 xmin=None xmax=None min_tier=None max_tier=None recent_days=14.0 co2_max=None hour=2026-11-29T15');
INSERT INTO "toolchain_state" VALUES('output:pings_all_tiered.svg','pings=2/341/3591930017174353920/4311340 rows=4 deployments=1/667/1795965008587692032/2155674 xmin=None xmax=None min_tier=None max_tier=None recent_days=14.0 co2_max=None');
INSERT INTO "toolchain_state" VALUES('output:pings_summary.html','pings=2/341/3591930017174353920/4311340 rows=4 deployments=1/667/1795965008587692032/2155674 xmin=None xmax=None min_tier=None max_tier=None recent_days=14.0 co2_max=None readings=5/3235/8979825042925553664/10778169 bins=16 hour=2026-11-29T15');
INSERT INTO "toolchain_state" VALUES('output:co2_summary.html','readings=5/3235/8979825042925553664/10778169 bins=16 deployments=1/667/1795965008587692032/2155674 xmin=None xmax=None min_tier=None max_tier=None recent_days=14.0 co2_max=None errors=1/374/1795965008586531584/2155665 pings=2/341/3591930017174353920/4311340 rows=4 hour=2026-11-29T15');
CREATE UNIQUE INDEX pings_unit_ts ON pings (unit_id, ping_ts);
CREATE INDEX pings_ts ON pings (ping_ts);
CREATE UNIQUE INDEX co2_readings_key ON co2_readings (unit_id, date, time);
CREATE INDEX error_logs_unit ON error_logs (unit_id, idate, itime);
CREATE INDEX dropped_lines_file ON dropped_lines (src_file, src_line);
COMMIT;
