-- Reserved: version 11 is the ready-rule migration (0011_ready_rule.sql) of the definitions
-- work, which lands separately. This placeholder keeps the versions gapless until then and
-- is deleted when that file arrives; it changes nothing.
SELECT 1;
