"""The controlled setting of the paper (after Gao et al., 2023): a golden reward labels the offline
data and judges the policy, so regularization (KL, R_mu) can be set against true quality."""

from gpo_lab.tasks.synthetic.behaviour import NoisyBehaviour
from gpo_lab.tasks.synthetic.builder import build_synthetic_task
from gpo_lab.tasks.synthetic.task import TopicTask


def task_tokenizer(task: TopicTask):
    """The word tokenizer of the task's closed vocabulary (for ``model.tokenizer`` configs)."""
    return task.tokenizer()


__all__ = ["NoisyBehaviour", "TopicTask", "build_synthetic_task", "task_tokenizer"]
