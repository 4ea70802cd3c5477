"""The daily-prediction application: the business rules around the generic ``kfp_bridge``.

Business time zone and target date (:mod:`.target_date`), the schedule's timetable
(:mod:`.timetables`), the Slack wording (:mod:`.notifications`). The provider never
imports this package (``tests/bridge/test_provider_wall.py`` checks it); DAGs do.
Deployed beside ``dags/`` (on Cloud Composer: in the bucket's ``dags/`` folder, which
Airflow puts on ``sys.path``); locally the Makefile puts the repository root on the
Airflow environment's path.
"""
