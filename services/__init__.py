"""The five services of the recorder: gateway, scheduler, recorder, uploader, indexer."""
