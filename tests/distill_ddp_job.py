"""Run by test_distill_train.test_ddp_two_processes_match_one, alone or under torchrun."""
import sys

import torch

from mobilebert_mobile import assets
from mobilebert_mobile.distill import api
from mobilebert_mobile.distill.teachers import load_teacher, matching_student_config

torch.set_num_threads(1)
teacher, out = sys.argv[1], sys.argv[2]
cfg = matching_student_config(load_teacher(teacher).config, embedding_size=16, intra_bottleneck_size=8,
                              intermediate_size=16, num_feedforward_networks=2, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0)
api.distill(teacher, assets.sample_sentences(32), out, student=cfg, strategy="auxiliary", steps=4, seq_len=24,
            batch_size=8, lr=5e-3, optimizer="lamb", progress=False)
