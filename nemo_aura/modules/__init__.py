"""nn building blocks of AuRA: the student's audio patch embedding, the teachers, the distillation loss."""
from nemo_aura.modules.distill import LayerwiseDistillation, pool_to_length, resolve_layer_map
from nemo_aura.modules.patch_embedding import AudioPatchEmbedding
from nemo_aura.modules.teachers import NeMoEncoderTeacher, Teacher, TeacherOutput, WhisperTeacher, build_teacher

__all__ = [
    "AudioPatchEmbedding",
    "LayerwiseDistillation",
    "NeMoEncoderTeacher",
    "Teacher",
    "TeacherOutput",
    "WhisperTeacher",
    "build_teacher",
    "pool_to_length",
    "resolve_layer_map",
]
