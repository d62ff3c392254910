"""The `wrpo` command line, recording the prompt token ids that vLLM ran each request on
(RequestOutput.prompt_token_ids), one JSON list a line, to the file named by WRPO_TEST_PROMPT_IDS.
A script for tests/test_vllm_backend.py: vLLM runs its engine in processes of its own, out of reach
of pytest's monkeypatch."""

import json
import os

if __name__ == "__main__":  # vLLM's worker processes import this module again
    from vllm import LLM

    from wrpo.cli import app

    generate = LLM.generate

    def recording_generate(self, *args, **kwargs):
        outputs = generate(self, *args, **kwargs)
        with open(os.environ["WRPO_TEST_PROMPT_IDS"], "a") as record:
            record.writelines(json.dumps(output.prompt_token_ids) + "\n" for output in outputs)
        return outputs

    LLM.generate = recording_generate
    app()
