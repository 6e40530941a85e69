import datetime
from jobcast_client import JobsClient
URL = "http://127.0.0.1:8535"
with JobsClient(URL) as jobs, JobsClient("http://127.0.0.1:8530") as direct:
    t0 = datetime.datetime.now(datetime.UTC)
    for k in range(10):
        try:
            with jobs.track(job_type="file_processing", message=f"run-{k}") as job:
                job.update(status="processing", progress=50)
                if k % 2: raise ValueError("bad file")
        except ValueError: pass
        jobs.cancel_job(jobs.create_job(message=f"cancel-{k}").job_id, force=True)
    mine = [j for j in direct.list_jobs() if j.created_at >= t0 - datetime.timedelta(seconds=1)]
    print("jobs created", len(mine), "(expected 20)", sorted(j.message for j in mine)[:4])
