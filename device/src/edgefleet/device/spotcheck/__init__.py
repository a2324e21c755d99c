"""The labelled spot check on the device (issue 25): a deterministic, unbiased sample of the frames, with the
model's answers, sent to the registry bucket for labelling. Off unless the agent config's `spot_check.enabled`.

    sampler  : which frames (hash of device id, run and frame sequence below the share; hourly and daily caps)
    outbox   : the bounded on-device directory of samples waiting for upload (oldest dropped, counted)
    upload   : create-only upload under `spotcheck/<device_id>/` (never elsewhere)
    runner   : the agent's side: an O(1) offer on the inference thread, a thread of its own for the rest
"""
